//! cometbox-bench: the load generator behind docs/BENCHMARKS.md.
//!
//! It drives cometbox, nchan and Pushpin (and a write-only "floor" server)
//! through the same scenarios over loopback and prints one JSON line per
//! run: idle memory per subscriber, fan-out completion, throughput,
//! long-poll rate, connection setup rate, with server PSS and CPU read from
//! /proc and lost / duplicated / out-of-order counts from payload stamps.
//! `bench/run.sh` starts the servers and runs everything; `report` turns the
//! JSON lines into the markdown table.

mod acks;
mod bayeux;
mod clients;
mod floor;
mod http;
mod load;
mod procstat;
mod publish;
mod report;
mod scenarios;
mod servers;
mod target;
mod ws;

use clients::{Poll, Transport};
use scenarios::{Idle, idle};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;
use target::{Kind, Target};

const USAGE: &str = "usage:
  cometbox-bench SCENARIO --target cometbox|nchan|pushpin|floor --http ADDR --publish SPEC --pid PID
        [--n N] [--messages M] [--batch B (publishes in flight)] [--rate MSGS_PER_S]
        [--http2 ADDR --pid2 PID (a second gateway of a cluster: SSE subscribers alternate)]
        [--size BYTES] [--connections C]   (publish: payload size, publishing connections)
      SCENARIO: idle-sse | idle-ws | idle-longpoll | idle-one-mailbox | fanout | fanout-ws | fanout-longpoll
                | throughput | throughput-paced | longpoll | connect
                | fanout-bayeux-longpoll | fanout-bayeux-websocket (cometbox only)
                | publish (no subscribers: acknowledged publishes/s and reply latency)
      SPEC: a Unix socket path (cometbox's RESP socket, the floor's control socket)
            or host:port (nchan's HTTP publisher, Pushpin's publish endpoint)
  cometbox-bench floor --port P --control PATH [--threads T]
        a server that only writes (the fan-out floor; T writer threads, default 2)
  cometbox-bench origin --port P                   a GRIP origin for Pushpin (holds every GET as a stream)
  cometbox-bench report RESULTS.jsonl              the markdown table, ratios against nchan
  cometbox-bench report-cluster RESULTS.jsonl      bench/cluster.sh's table: single node beside cluster";

pub struct Args {
    pub n: usize,
    pub messages: usize,
    /// Publishes per pipelined batch: the next batch goes out when this
    /// one is acknowledged, so it bounds what is in flight.
    pub batch: usize,
    /// Publishes per second, for a latency figure at a load every server
    /// sustains; None = as fast as the server acknowledges.
    pub rate: Option<f64>,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(scenario) = args.first().cloned() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    procstat::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match scenario.as_str() {
        "floor" => floor::floor(
            arg(&args, "--port")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
            &arg(&args, "--control").expect("--control PATH"),
            arg(&args, "--threads")
                .and_then(|p| p.parse().ok())
                .unwrap_or(2),
        ),
        "origin" => rt.block_on(servers::grip_origin(
            arg(&args, "--port")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
        )),
        "report-cluster" => report::report_cluster(&args.get(1).cloned().expect("RESULTS.jsonl")),
        "report" => report::report(
            &arg(&args, "report")
                .or_else(|| args.get(1).cloned())
                .expect("RESULTS.jsonl"),
        ),
        "idle-sse"
        | "idle-ws"
        | "idle-longpoll"
        | "idle-one-mailbox"
        | "fanout"
        | "fanout-ws"
        | "fanout-longpoll"
        | "fanout-bayeux-longpoll"
        | "fanout-bayeux-websocket"
        | "throughput"
        | "throughput-paced"
        | "longpoll"
        | "connect"
        | "publish" => {
            let kind = match arg(&args, "--target").as_deref() {
                Some("cometbox") => Kind::Cometbox,
                Some("nchan") => Kind::Nchan,
                Some("pushpin") => Kind::Pushpin,
                Some("floor") => Kind::Floor,
                _ => {
                    eprintln!("{USAGE}");
                    std::process::exit(2);
                }
            };
            if scenario.contains("bayeux") && kind != Kind::Cometbox {
                eprintln!("{scenario}: Bayeux is cometbox's own (--target cometbox)");
                std::process::exit(2);
            }
            let t = Arc::new(Target {
                kind,
                http: arg(&args, "--http")
                    .and_then(|a| a.parse().ok())
                    .expect("--http ADDR"),
                publish: arg(&args, "--publish").unwrap_or_default(),
                pid: arg(&args, "--pid")
                    .and_then(|p| p.parse().ok())
                    .expect("--pid PID"),
                more_http: arg(&args, "--http2")
                    .and_then(|a| a.parse().ok())
                    .into_iter()
                    .collect(),
                more_pids: arg(&args, "--pid2")
                    .and_then(|p| p.parse().ok())
                    .into_iter()
                    .collect(),
                next_http: AtomicUsize::new(0),
            });
            let a = Args {
                n: arg(&args, "--n")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1000),
                messages: arg(&args, "--messages")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(20),
                batch: arg(&args, "--batch")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(500),
                rate: arg(&args, "--rate").and_then(|v| v.parse().ok()),
            };
            let started = Instant::now();
            let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            let mut result = rt.block_on(async {
                let t = t.clone();
                match scenario.as_str() {
                    "idle-sse" => idle(t, &a, Idle::Stream(Transport::Sse)).await,
                    "idle-ws" => idle(t, &a, Idle::Stream(Transport::Ws)).await,
                    "idle-longpoll" => idle(t, &a, Idle::LongPoll).await,
                    "idle-one-mailbox" => idle(t, &a, Idle::OneMailbox).await,
                    "fanout" => scenarios::fanout(t, &a, Transport::Sse).await,
                    "fanout-ws" => scenarios::fanout(t, &a, Transport::Ws).await,
                    "fanout-longpoll" => scenarios::fanout_longpoll(t, &a, Poll::Mailbox).await,
                    "fanout-bayeux-longpoll" => {
                        scenarios::fanout_longpoll(t, &a, Poll::Bayeux).await
                    }
                    "fanout-bayeux-websocket" => {
                        scenarios::fanout(t, &a, Transport::BayeuxWs).await
                    }
                    "throughput" | "throughput-paced" => load::throughput(t, &a).await,
                    "longpoll" => load::longpoll(t, &a).await,
                    "publish" => {
                        let num = |name| arg(&args, name).and_then(|v| v.parse().ok());
                        let (size, conns) = (num("--size").unwrap_or(0), num("--connections"));
                        let a = Args { ..a };
                        tokio::task::spawn_blocking(move || {
                            acks::publish_only(t, &a, size, conns.unwrap_or(1))
                        })
                        .await
                        .expect("the publish scenario")
                    }
                    _ => load::connect(t, &a).await,
                }
            });
            // The 1-minute load average when the scenario started: the
            // machine is shared, and this says how much.
            result["loadavg_1m"] = json!(
                load.split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
            );
            result["scenario"] = json!(scenario);
            result["target"] = json!(t.name());
            result["wall_s"] = json!(started.elapsed().as_secs_f64());
            println!("{result}");
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}
