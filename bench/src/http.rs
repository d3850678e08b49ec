//! Driving an HTTP server: latency with one client, throughput with several.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::stats::closed_loop;

/// One target: URL, headers, body.
#[derive(Clone)]
pub struct Target {
    /// Full URL.
    pub url: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The image.
    pub body: Vec<u8>,
    /// Its content type.
    pub content_type: String,
}

/// A client that reports every status as an answer, with a long timeout.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

/// One answer: status, selected numeric headers, body.
pub struct Answer {
    /// Status.
    pub status: u16,
    /// Client-observed latency, ms.
    pub ms: f64,
    /// `x-*` headers that parse as numbers.
    pub numbers: Vec<(String, f64)>,
    /// Body.
    pub body: String,
}

impl Answer {
    /// A numeric header.
    pub fn number(&self, name: &str) -> Option<f64> {
        self.numbers.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

/// Send one request.
pub fn send(agent: &ureq::Agent, t: &Target) -> anyhow::Result<Answer> {
    let mut req = agent.post(&t.url).header("content-type", &t.content_type);
    for (k, v) in &t.headers {
        req = req.header(k, v);
    }
    let started = Instant::now();
    let mut r = req.send(&t.body[..])?;
    let body = r.body_mut().read_to_string()?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let numbers = r
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-"))
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.parse().ok()?)))
        .collect();
    Ok(Answer { status: r.status().as_u16(), ms, numbers, body })
}

/// `n` sequential requests after `warmup` unmeasured ones.
pub fn sequential(t: &Target, warmup: usize, n: usize) -> anyhow::Result<Vec<Answer>> {
    let agent = agent();
    for _ in 0..warmup {
        send(&agent, t)?;
    }
    (0..n).map(|_| send(&agent, t)).collect()
}

/// `n` rounds of one request to each target in turn (after `warmup` unmeasured rounds): the
/// answers per target, so that slow phases of a noisy machine hit every side alike. Each
/// round starts one target further on, so that no side always comes right after another.
/// Answer `k` of every target is from round `k`.
pub fn alternating(targets: &[&Target], warmup: usize, n: usize) -> anyhow::Result<Vec<Vec<Answer>>> {
    let agent = agent();
    let mut answers: Vec<Vec<Answer>> = targets.iter().map(|_| Vec::with_capacity(n)).collect();
    for round in 0..warmup + n {
        for i in (0..targets.len()).map(|i| (i + round) % targets.len()) {
            let answer = send(&agent, targets[i])?;
            if round >= warmup {
                answers[i].push(answer);
            }
        }
    }
    Ok(answers)
}

/// Requests per second with `clients` concurrent clients for `duration`, and the number
/// of non-200 answers or transport errors.
pub fn throughput(t: &Target, clients: usize, duration: Duration) -> (f64, usize) {
    throughput_spread(std::slice::from_ref(t), clients, duration)
}

/// [`throughput`] with the clients spread over several servers (client i sends to target
/// i mod n), as a load balancer in front of them would.
pub fn throughput_spread(targets: &[Target], clients: usize, duration: Duration) -> (f64, usize) {
    let next = AtomicUsize::new(0);
    let state = || (agent(), &targets[next.fetch_add(1, Ordering::Relaxed) % targets.len()]);
    closed_loop(clients, duration, state, |(agent, t)| send(agent, t).is_ok_and(|a| a.status == 200))
}
