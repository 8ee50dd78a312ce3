//! A fault-injecting TCP proxy for the tests: forwards bytes between a client and a real
//! server (ClickHouse's HTTP port) and can be told to cut the requests whose text (URL query
//! decoded) contains a pattern, or to go down at a chosen moment.
//!
//! Requests are matched chunk by chunk, with the tail of the previous chunk kept so a pattern
//! split across two reads is still seen. Each rule counts its hits, so a test can prove its
//! fault really fired.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// What to do with a request containing a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Close the connection without forwarding the request: the server never sees it.
    Refuse,
    /// Forward the request, then swallow the server's answer and close: the server did the
    /// work, the client sees a failure.
    SwallowAnswer,
    /// Forward the request and its answer, then go down: every later request is refused until
    /// [`FaultProxy::up`].
    DownAfter,
}

#[derive(Debug)]
struct Rule {
    pattern: String,
    action: Action,
    hits: usize,
}

#[derive(Debug, Default)]
struct Faults {
    rules: Vec<Rule>,
    down: bool,
}

impl Faults {
    /// The action for a chunk of client bytes (counting the hit), if a rule matches.
    fn matching(&mut self, text: &str) -> Option<Action> {
        let rule = self.rules.iter_mut().find(|r| text.contains(&r.pattern))?;
        rule.hits += 1;
        Some(rule.action)
    }
}

/// The proxy; dropped, it stops accepting.
pub struct FaultProxy {
    addr: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    stop: Arc<Notify>,
}

impl FaultProxy {
    /// Listens on a free local port and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let stop = Arc::new(Notify::new());
        let (f, s, up) = (faults.clone(), stop.clone(), upstream.to_owned());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = s.notified() => return,
                    a = listener.accept() => a,
                };
                let Ok((client, _)) = accepted else { continue };
                if f.lock().unwrap().down {
                    drop(client);
                    continue;
                }
                tokio::spawn(relay(client, up.clone(), f.clone()));
            }
        });
        Self { addr, faults, stop }
    }

    /// `http://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a rule: requests containing `pattern` get `action`.
    pub fn on(&self, pattern: &str, action: Action) {
        self.faults.lock().unwrap().rules.push(Rule {
            pattern: pattern.to_owned(),
            action,
            hits: 0,
        });
    }

    /// How many requests matched `pattern`'s rule.
    pub fn hits(&self, pattern: &str) -> usize {
        let f = self.faults.lock().unwrap();
        f.rules
            .iter()
            .filter(|r| r.pattern == pattern)
            .map(|r| r.hits)
            .sum()
    }

    /// Whether the proxy went down.
    pub fn is_down(&self) -> bool {
        self.faults.lock().unwrap().down
    }

    /// Removes every rule and comes back up.
    pub fn heal(&self) {
        let mut f = self.faults.lock().unwrap();
        f.rules.clear();
        f.down = false;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

/// Percent-decodes `bytes` (and `+` as a space) lossily, for matching SQL in URL queries.
fn decoded(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the client side of a connection decided for the server side.
#[derive(Debug, Default)]
struct Verdict {
    /// Swallow the next answer and close.
    swallow: bool,
    /// Forward the next answer, then go down.
    down_after: bool,
}

/// Relays one connection until either side closes or a rule cuts it.
async fn relay(client: TcpStream, upstream: String, faults: Arc<Mutex<Faults>>) {
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let verdict = Arc::new(Mutex::new(Verdict::default()));
    let cut = Arc::new(Notify::new());
    let (v, f, c) = (verdict.clone(), faults.clone(), cut.clone());
    let upward = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            tail.extend_from_slice(&buf[..n]);
            let text = decoded(&tail);
            let keep = tail.len().saturating_sub(512);
            tail.drain(..keep);
            let action = {
                let mut f = f.lock().unwrap();
                if f.down {
                    Some(Action::Refuse)
                } else {
                    f.matching(&text)
                }
            };
            match action {
                Some(Action::Refuse) => {
                    c.notify_one();
                    return;
                }
                Some(Action::SwallowAnswer) => v.lock().unwrap().swallow = true,
                Some(Action::DownAfter) => v.lock().unwrap().down_after = true,
                None => {}
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let downward = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let (swallow, down_after) = {
                let v = verdict.lock().unwrap();
                (v.swallow, v.down_after)
            };
            if swallow {
                return;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
            if down_after {
                // Down from the first byte of the matched request's answer on: the rest of
                // the answer is still relayed, every later request is refused.
                faults.lock().unwrap().down = true;
            }
        }
    };
    tokio::select! {
        () = upward => {}
        () = downward => {}
        () = cut.notified() => {}
    }
}
