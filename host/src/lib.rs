//! yolo-edge's host: serves the detection component over HTTP with Wasmtime, provides
//! wasi-nn on ONNX Runtime and OpenVINO ([`yolo_edge_nn`]), meters every invocation and
//! records it in the ledger ([`yolo_edge_ledger`]).
//!
//! A request flows one way: [`server`] (accept, [`front`] limits, the [`routes`] table) →
//! [`billing`] ([`admission`]: API key, rate limit, balance; [`idempotency`]; the result
//! [`cache`]; instance [`limits`]) → [`invoke`] (a fresh instance from the [`engine`]'s
//! pre-instantiated component, with [`state`] for WASI, wasi-http and wasi-nn; fuel, wall
//! time, inference time, memory: [`metering`]) → [`pricing`] (tokens) → the ledger (one
//! hash-chained row, committed with the charge) → the [`reply`] with `x-tokens` and
//! `x-balance`. [`api`] and [`report`] show usage; [`settings`] is what a server runs with,
//! resolved once by the [`cli`] from [`config`] and flags; [`launch`] builds the [`app`].
#![deny(missing_docs)]

pub mod admission;
pub mod answer;
pub mod api;
pub mod app;
pub mod audit;
pub mod bake;
pub mod billing;
pub mod cache;
pub mod cli;
pub mod compose;
pub mod config;
pub mod engine;
pub mod front;
pub mod holds;
pub mod idempotency;

pub mod invoke;
pub mod launch;
pub mod limits;
pub mod manifest;
pub mod metering;
pub mod metrics;
pub mod pricing;
pub mod redis_link;
pub mod reply;
pub mod report;
pub mod routes;
pub mod server;
pub mod settings;
pub mod state;
pub mod web;
