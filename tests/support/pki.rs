//! A test CA and a leaf certificate for `localhost`, and clients trusting it.

use super::write_atomic;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// A test CA and a leaf certificate it signed for `localhost` and 127.0.0.1.
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "keygate test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
        }
    }

    /// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir`.
    pub fn write(&self, dir: &Path) {
        std::fs::write(dir.join("ca.pem"), &self.ca_pem).unwrap();
        write_atomic(&dir.join("cert.pem"), &self.cert_pem);
        write_atomic(&dir.join("key.pem"), &self.key_pem);
    }

    /// A client trusting only this CA, resolving `localhost` to 127.0.0.1.
    pub fn client(&self, port: u16) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], port)))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
