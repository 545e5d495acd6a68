//! Black-box tests: the real `keygate` binary against a real upstream on
//! 127.0.0.1, driven by real HTTP clients. One binary; each file is a topic.

mod util;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

mod admin;
mod alloc;
mod contract;
mod demo;
mod hostile;
mod keys_cli;
mod lifecycle;
mod props;
mod reload;
mod smoke;
mod tls;
mod wire;
