//! The Starling relay: the REST API for submitters, WebRTC signaling and peers for
//! volunteers, the scheduler that leases work units, and durable storage in SQLite.
//!
//! - [`routes`]: HTTP handlers (thin: parse, call, answer);
//! - [`scheduler`]: leasing, results, requeueing and merging;
//! - [`lifecycle`]: a unit's life stage by stage (results judged and settled, jobs
//!   billed), each stage's decisions as pure functions of what storage loaded;
//! - [`storage`]: every state transition as one SQLite transaction (load, apply);
//! - [`validation`]: quorum and wallet trust, as pure logic;
//! - [`ledger`]: the signed, hash-chained credit ledger, as pure logic;
//! - [`rtc`]: volunteers' WebRTC sessions, and the bounds on offers and on peers not yet
//!   proved by a hello;
//! - [`middleware`]: admission (rate limits, API key), request metrics, security headers;
//! - [`sites`]: proving a site owner controls the origin they register;
//! - [`server`]: accepting connections, with header timeouts and a connection cap;
//! - [`tls`]: HTTPS (operator's certificate or a self-signed one, HTTP/2 by ALPN);
//! - [`static_files`]: the web app and public assets, precompressed and cached;
//! - [`app`]: the router and its state; [`error`]: problem+json errors; [`data_dir`]: the
//!   data directory, private to the relay's user.

pub mod app;
pub mod custom_kernels;
pub mod data_dir;
pub mod error;
pub mod ledger;
pub mod lifecycle;
pub mod middleware;
pub mod routes;
pub mod rtc;
pub mod scheduler;
pub mod server;
pub mod sites;
pub mod static_files;
pub mod storage;
pub mod tls;
pub mod validation;
