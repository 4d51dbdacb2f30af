//! notes-grpc conformance client: runs the fixed sequence (hit, miss, stream)
//! against `--target HOST:PORT` and prints one JSON verdict on stdout.
//! Exit code 0 only when every check passes, 1 otherwise, 2 on bad usage.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

use notes_grpc::pb::noticeboard_client::NoticeboardClient;
use notes_grpc::pb::{Author, Title};

/// Deadline of each call (sent to the server as grpc-timeout, and enforced here).
const CALL_DEADLINE: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Serialize)]
struct Verdict {
    client: &'static str,
    target: String,
    ok: bool,
    checks: Vec<Check>,
}

#[derive(Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

impl Check {
    fn from_outcome(name: &'static str, outcome: Result<String, String>) -> Self {
        match outcome {
            Ok(detail) => Check {
                name,
                ok: true,
                detail,
            },
            Err(detail) => Check {
                name,
                ok: false,
                detail,
            },
        }
    }
}

fn parse_target() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let mut target = None;
    while let Some(arg) = args.next() {
        if arg == "--target" {
            target = Some(args.next().ok_or("--target needs a value")?);
        } else if let Some(value) = arg.strip_prefix("--target=") {
            target = Some(value.to_owned());
        } else if arg == "-h" || arg == "--help" {
            return Err(String::new());
        } else {
            return Err(format!("unexpected argument {arg:?}"));
        }
    }
    target.ok_or_else(|| "--target HOST:PORT is required".to_owned())
}

fn request<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(CALL_DEADLINE);
    request
}

/// Runs one call under the client-side deadline.
async fn within_deadline<T>(call: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(CALL_DEADLINE, call)
        .await
        .unwrap_or_else(|_| Err(format!("deadline of {CALL_DEADLINE:?} exceeded")))
}

fn describe(status: &tonic::Status) -> String {
    format!(
        "status {:?} ({}): {}",
        status.code(),
        status.code() as i32,
        status.message()
    )
}

async fn check_hit(mut client: NoticeboardClient<Channel>) -> Result<String, String> {
    let note = client
        .get_note_by_title(request(Title {
            title: "Hello".into(),
        }))
        .await
        .map_err(|s| describe(&s))?
        .into_inner();
    let (nickname, mail) = note
        .author
        .as_ref()
        .map_or(("", ""), |a| (a.nickname.as_str(), a.mail.as_str()));
    let got = (note.title.as_str(), note.content.as_str(), nickname, mail);
    let want = ("Hello", "Hello, world of notes.", "Hans", "hans@gmail.com");
    if got == want {
        Ok(format!(
            "got note {:?} by {} <{}>",
            note.title, nickname, mail
        ))
    } else {
        Err(format!(
            "want (title, content, nickname, mail) = {want:?}, got {got:?}"
        ))
    }
}

async fn check_miss(mut client: NoticeboardClient<Channel>) -> Result<String, String> {
    match client
        .get_note_by_title(request(Title {
            title: "no such note".into(),
        }))
        .await
    {
        Ok(response) => Err(format!(
            "want NOT_FOUND, got a note titled {:?}",
            response.into_inner().title
        )),
        Err(status) if status.code() == Code::NotFound => Ok(describe(&status)),
        Err(status) => Err(format!("want NOT_FOUND, got {}", describe(&status))),
    }
}

async fn check_stream(mut client: NoticeboardClient<Channel>) -> Result<String, String> {
    let author = Author {
        nickname: String::new(),
        mail: "hans@gmail.com".into(),
    };
    let mut stream = client
        .list_notes_by_author(request(author))
        .await
        .map_err(|s| describe(&s))?
        .into_inner();
    let mut titles = Vec::new();
    while let Some(note) = stream
        .message()
        .await
        .map_err(|s| format!("after {titles:?}: {}", describe(&s)))?
    {
        titles.push(note.title);
    }
    if titles == ["Hello", "Goodbye"] {
        Ok(format!("got {titles:?}, then OK"))
    } else {
        Err(format!("want [\"Hello\", \"Goodbye\"], got {titles:?}"))
    }
}

async fn run_checks(target: &str) -> Vec<Check> {
    let uri = if target.contains("://") {
        target.to_owned()
    } else {
        format!("http://{target}")
    };
    let channel = match Endpoint::from_shared(uri) {
        Ok(endpoint) => endpoint.connect_timeout(CONNECT_TIMEOUT).connect_lazy(),
        Err(e) => {
            let detail = format!("invalid target {target:?}: {e}");
            return ["hit", "miss", "stream"]
                .into_iter()
                .map(|name| Check {
                    name,
                    ok: false,
                    detail: detail.clone(),
                })
                .collect();
        }
    };
    let client = NoticeboardClient::new(channel);
    vec![
        Check::from_outcome("hit", within_deadline(check_hit(client.clone())).await),
        Check::from_outcome("miss", within_deadline(check_miss(client.clone())).await),
        Check::from_outcome("stream", within_deadline(check_stream(client)).await),
    ]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let target = match parse_target() {
        Ok(target) => target,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("notes-client: {e}");
            }
            eprintln!("usage: notes-client --target HOST:PORT");
            return ExitCode::from(2);
        }
    };
    let checks = run_checks(&target).await;
    let ok = checks.iter().all(|c| c.ok);
    let verdict = Verdict {
        client: "rust",
        target,
        ok,
        checks,
    };
    match serde_json::to_string(&verdict) {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("notes-client: cannot encode the verdict: {e}");
            return ExitCode::FAILURE;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
