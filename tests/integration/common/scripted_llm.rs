//! A scripted OpenAI-compatible chat-completions server for fault injection.
//!
//! It speaks plain HTTP/1.1 on a raw socket (not a framework) so that it can fail the way real
//! servers and networks do: status codes with `Retry-After`, answers that never come, bodies
//! that are not JSON, bytes that are not HTTP at all, connections reset or half-closed before
//! or partway through an answer, and bodies or event streams that trickle and never end. Every
//! request is logged with its arrival time, body and what the script did with it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regex::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server does with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// A normal completion whose text the responder writes.
    Answer,
    /// [`Behaviour::Answer`] after this long (a model's fixed response time).
    AnswerAfter(Duration),
    /// 429 with `Retry-After: seconds`.
    RateLimited { retry_after_s: u64 },
    /// An error status with an empty JSON body.
    Status(u16),
    /// Accept the request and answer nothing for this long (the client should time out first).
    Hang(Duration),
    /// Close the connection with a TCP reset instead of answering.
    Reset,
    /// 200 with a body that is not JSON.
    Malformed,
    /// A streamed answer (when the request asks for one) that breaks off halfway: the
    /// connection is reset after half of the pieces.
    BreakMidStream,
    /// Bytes that are not HTTP at all (binary noise), then the connection closes.
    Garbage,
    /// Read the request, then shut the write half without a word: the client reads the end of
    /// the connection where the response should be, while the server keeps its read half open.
    HalfClose,
    /// A 200 whose `Content-Length` promises more than the few bytes sent before the write half
    /// is shut.
    HalfCloseMidBody,
    /// A 200 whose body (an event stream of text pieces when the request asks to stream)
    /// trickles one small piece every `every` and never ends: only a bound on the whole call
    /// stops it.
    SlowDrip { every: Duration },
    /// This status and body, whatever was asked (a response of another API, a proxy's page).
    Raw { status: u16, body: String },
}

/// Characters per streamed piece: small, so placeholders are split across pieces.
const STREAM_PIECE_CHARS: usize = 3;

/// One request the server received.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub at: Instant,
    pub path: String,
    pub body: String,
    /// The `Authorization` header, if the request had one.
    pub authorization: Option<String>,
    /// The `x-api-key` header (Anthropic's key), if the request had one.
    pub api_key: Option<String>,
    pub behaviour: Behaviour,
}

/// Decides the behaviour for a request: (request JSON, 0-based call number).
pub type Script = Arc<dyn Fn(&serde_json::Value, usize) -> Behaviour + Send + Sync>;
/// Writes the answer text for a request.
pub type Responder = Arc<dyn Fn(&serde_json::Value) -> String + Send + Sync>;

/// A running scripted server.
pub struct ScriptedLlm {
    pub url: String,
    pub log: Arc<Mutex<Vec<LoggedRequest>>>,
}

impl ScriptedLlm {
    /// Starts a server on a free loopback port.
    pub async fn start(script: Script, responder: Responder) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log: Arc<Mutex<Vec<LoggedRequest>>> = Arc::default();
        let calls = Arc::new(Mutex::new(0usize));
        let server_log = log.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (script, responder, log, calls) =
                    (script.clone(), responder.clone(), server_log.clone(), calls.clone());
                tokio::spawn(async move { serve(stream, script, responder, log, calls).await });
            }
        });
        Self { url, log }
    }

    /// Every request body received so far.
    pub fn bodies(&self) -> Vec<String> {
        self.log.lock().unwrap().iter().map(|r| r.body.clone()).collect()
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.log.lock().unwrap().clone()
    }

    /// The first request for each distinct user message, in arrival order. A call the client
    /// retried (its timeout passed while the machine was busy) is one question, not two.
    pub fn first_calls(&self) -> Vec<LoggedRequest> {
        let mut seen = std::collections::HashSet::new();
        self.requests()
            .into_iter()
            .filter(|request| {
                let body: serde_json::Value = serde_json::from_str(&request.body).unwrap_or_default();
                seen.insert(user_message(&body))
            })
            .collect()
    }
}

/// One request as read.
struct Request {
    path: String,
    body: String,
    authorization: Option<String>,
    api_key: Option<String>,
}

/// The value of the header `name` in a request's head, if it has one.
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (found, value) = line.split_once(':')?;
        found.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
    })
}

/// Reads one HTTP request (headers, then a Content-Length body); `None` when the peer closed.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Request> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let length: usize = header(&head, "content-length")
                .and_then(|value| value.parse().ok())
                .unwrap_or(0);
            let total = end + 4 + length;
            while buffer.len() < total {
                let mut chunk = [0u8; 8192];
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
            let request = Request {
                path: head.split_whitespace().nth(1).unwrap_or("/").to_owned(),
                body: String::from_utf8_lossy(&buffer[end + 4..total]).into_owned(),
                authorization: header(&head, "authorization"),
                api_key: header(&head, "x-api-key"),
            };
            buffer.drain(..total);
            return Some(request);
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

fn response(status: u16, reason: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn serve(
    mut stream: TcpStream,
    script: Script,
    responder: Responder,
    log: Arc<Mutex<Vec<LoggedRequest>>>,
    calls: Arc<Mutex<usize>>,
) {
    let mut buffer = Vec::new();
    while let Some(Request {
        path,
        body,
        authorization,
        api_key,
    }) = read_request(&mut stream, &mut buffer).await
    {
        let at = Instant::now();
        let request: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        let call = {
            let mut calls = calls.lock().unwrap();
            *calls += 1;
            *calls - 1
        };
        let behaviour = script(&request, call);
        log.lock().unwrap().push(LoggedRequest {
            at,
            path,
            body: body.clone(),
            authorization,
            api_key,
            behaviour: behaviour.clone(),
        });
        if let Behaviour::AnswerAfter(delay) = behaviour {
            tokio::time::sleep(delay).await;
        }
        let streamed = request["stream"] == true;
        if streamed && matches!(behaviour, Behaviour::Answer | Behaviour::BreakMidStream) {
            let text = responder(&request);
            let complete = behaviour == Behaviour::Answer;
            stream_answer(&mut stream, &text, complete).await;
            return; // a close-delimited body: the connection is done
        }
        let bytes = match &behaviour {
            Behaviour::Answer | Behaviour::AnswerAfter(_) | Behaviour::BreakMidStream => {
                let text = responder(&request);
                let completion = serde_json::json!({
                    "id": "scripted",
                    "object": "chat.completion",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": body.len() / 4, "completion_tokens": text.len() / 4},
                });
                response(200, "OK", "", &completion.to_string())
            }
            Behaviour::RateLimited { retry_after_s } => response(
                429,
                "Too Many Requests",
                &format!("retry-after: {retry_after_s}\r\n"),
                "{}",
            ),
            Behaviour::Status(status) => response(*status, "Error", "", "{}"),
            Behaviour::Malformed => response(200, "OK", "", "{\"choices\": [ not json"),
            Behaviour::Raw { status, body: raw } => response(*status, "Scripted", "", raw),
            Behaviour::Hang(duration) => {
                tokio::time::sleep(*duration).await;
                return;
            }
            Behaviour::Reset => {
                // Linger 0 turns the close into a TCP reset, which is the point here (the
                // deprecation warns that it blocks on drop; with a zero linger it does not).
                #[allow(deprecated)]
                let _ = stream.set_linger(Some(Duration::ZERO));
                return;
            }
            Behaviour::Garbage => {
                if stream.write_all(&garbage()).await.is_ok() {
                    let _ = stream.shutdown().await;
                }
                return;
            }
            Behaviour::HalfClose => {
                half_close(&mut stream).await;
                return;
            }
            Behaviour::HalfCloseMidBody => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4096\r\n\r\n";
                if stream
                    .write_all(format!("{head}{{\"choices\": [").as_bytes())
                    .await
                    .is_ok()
                {
                    half_close(&mut stream).await;
                }
                return;
            }
            Behaviour::SlowDrip { every } => {
                drip(&mut stream, streamed, *every).await;
                return;
            }
        };
        if stream.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

/// Streams `text` as server-sent events in small pieces; `complete: false` resets the
/// connection after half of them.
async fn stream_answer(stream: &mut TcpStream, text: &str, complete: bool) {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let chars: Vec<char> = text.chars().collect();
    let pieces: Vec<String> = chars.chunks(STREAM_PIECE_CHARS).map(|c| c.iter().collect()).collect();
    let sent = if complete { pieces.len() } else { pieces.len() / 2 };
    for piece in &pieces[..sent] {
        let event = serde_json::json!({"choices": [{"index": 0, "delta": {"content": piece}}]});
        if stream.write_all(format!("data: {event}\n\n").as_bytes()).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if !complete {
        #[allow(deprecated)]
        let _ = stream.set_linger(Some(Duration::ZERO));
        return;
    }
    let last = serde_json::json!({
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": pieces.len()},
    });
    let _ = stream
        .write_all(format!("data: {last}\n\ndata: [DONE]\n\n").as_bytes())
        .await;
    let _ = stream.shutdown().await;
}

/// Bytes no HTTP client can parse: a NUL where the status line's `HTTP/` should be, then
/// binary noise (a fixed sequence, so that a failure can be replayed).
fn garbage() -> Vec<u8> {
    (0u32..512)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// Shuts the write half (the client reads the end of the connection) and keeps the read half
/// open until the client hangs up, as a peer that stalled after its FIN does.
async fn half_close(stream: &mut TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut ignored = [0u8; 1024];
    while stream.read(&mut ignored).await.is_ok_and(|n| n > 0) {}
}

/// Starts a 200 answer and sends one more small piece every `every` until the client hangs up:
/// JSON whitespace under a `Content-Length` never reached, or, when the request asks to stream,
/// an event stream of one-character text pieces that never says `[DONE]`.
async fn drip(stream: &mut TcpStream, streamed: bool, every: Duration) {
    let (head, piece) = if streamed {
        let event = serde_json::json!({"choices": [{"index": 0, "delta": {"content": "."}}]});
        (
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n".to_owned(),
            format!("data: {event}\n\n"),
        )
    } else {
        (
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n{\"choices\": ["
                .to_owned(),
            " ".to_owned(),
        )
    };
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    // Ends when a write fails: the client gave up and closed the connection.
    loop {
        tokio::time::sleep(every).await;
        if stream.write_all(piece.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The user message of a chat request.
pub fn user_message(request: &serde_json::Value) -> String {
    request["messages"]
        .as_array()
        .and_then(|messages| messages.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Answers by quoting passage 1 (an answer the passages support, citing it) and repeating every
/// placeholder of the request (so restoration is exercised).
pub fn echo_placeholders() -> Responder {
    let placeholder = Regex::new(r"\[[A-Z_]+_\d+\]").unwrap();
    let first_passage = Regex::new(r"(?m)^\[1\] (?:\([^)]*\) )?(.*)$").unwrap();
    Arc::new(move |request| {
        let user = user_message(request);
        let mut found: Vec<&str> = placeholder.find_iter(&user).map(|m| m.as_str()).collect();
        found.dedup();
        let quoted = first_passage
            .captures(&user)
            .map(|c| c[1].split_whitespace().take(12).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        format!(
            "According to the documents [1], {quoted}; this concerns {}.",
            found.join(" and ")
        )
    })
}

/// Always answers.
pub fn always_answer() -> Script {
    Arc::new(|_, _| Behaviour::Answer)
}
