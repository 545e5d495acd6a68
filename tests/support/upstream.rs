//! A real HTTP/1.1 echo upstream (hyper) on 127.0.0.1, plain or TLS, and
//! the requests it saw.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Raw request target.
    pub url: String,
    /// Headers, names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Seen {
    /// Every value of a header.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of a header (panics if repeated).
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(
            all.len() <= 1,
            "header {name} appears {} times: {all:?}",
            all.len()
        );
        all.first().copied()
    }
}

/// A real HTTP/1.1 upstream (hyper) that answers `status` with a JSON echo of
/// the request and records what it saw. `delay_ms` makes it slow (timeouts);
/// a `pad=N` query parameter follows the echo with N bytes of padding (a
/// large response).
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub delay_ms: Arc<AtomicU64>,
    pub status: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Upstream {
    pub fn start() -> Upstream {
        Self::start_on("127.0.0.1:0")
    }

    pub fn start_on(addr: &str) -> Upstream {
        Self::serve(addr, None)
    }

    /// The echo upstream behind TLS with the given certificate.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Upstream {
        use tokio_rustls::rustls;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .unwrap()
            .unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self::serve(
            "127.0.0.1:0",
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
    }

    fn serve(addr: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let std_listener = TcpListener::bind(addr).unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let status = Arc::new(AtomicU64::new(200));
        let accepted = Arc::new(AtomicU64::new(0));
        {
            let (seen, delay_ms, status, accepted) = (
                Arc::clone(&seen),
                Arc::clone(&delay_ms),
                Arc::clone(&status),
                Arc::clone(&accepted),
            );
            runtime.spawn(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (seen, delay_ms, status) = (
                        Arc::clone(&seen),
                        Arc::clone(&delay_ms),
                        Arc::clone(&status),
                    );
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            echo(
                                req,
                                Arc::clone(&seen),
                                Arc::clone(&delay_ms),
                                Arc::clone(&status),
                            )
                        });
                        let http = hyper::server::conn::http1::Builder::new();
                        let _ = match tls {
                            None => {
                                http.serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                                    .await
                            }
                            Some(acceptor) => match acceptor.accept(tcp).await {
                                Ok(stream) => {
                                    http.serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                        .await
                                }
                                Err(_) => return,
                            },
                        };
                    });
                }
            });
        }
        Upstream {
            addr,
            seen,
            delay_ms,
            status,
            accepted,
            runtime: Some(runtime),
        }
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The last request seen.
    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream saw no request")
    }

    /// How many requests it saw.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn echo(
    req: hyper::Request<hyper::body::Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    delay_ms: Arc<AtomicU64>,
    status: Arc<AtomicU64>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, hyper::Error> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes().to_vec();
    let s = Seen {
        method: parts.method.to_string(),
        url: parts.uri.to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    let echo = serde_json::json!({
        "method": s.method,
        "url": s.url,
        "headers": s.headers,
    });
    seen.lock().unwrap().push(s);
    let d = delay_ms.load(Ordering::SeqCst);
    if d > 0 {
        tokio::time::sleep(Duration::from_millis(d)).await;
    }
    let mut body = echo.to_string().into_bytes();
    let pad = parts
        .uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("pad=")))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    body.resize(body.len() + pad.min(256 << 20), b' ');
    Ok(hyper::Response::builder()
        .status(status.load(Ordering::SeqCst) as u16)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap())
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
