//! The rubric judge against a fake OpenAI-compatible server run in the test: the request it sends,
//! the strict score contract, malformed replies, HTTP errors, retries, timeouts and the
//! concurrency limit.

use rlvr_verifiers::judge::parse_score;
use rlvr_verifiers::{score_batch, JudgeConfig, JudgeVerifier, Outcome, Task, Verifier, VerifierSpec, VerifyError};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the fake server does with one request.
struct Reply {
    delay: Duration,
    status: u16,
    body: String,
}

impl Reply {
    fn chat(content: &str) -> Reply {
        Reply { delay: Duration::ZERO, status: 200, body: chat_body(content) }
    }
}

fn chat_body(content: &str) -> String {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "fake",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": content }, "finish_reason": "stop" }],
    })
    .to_string()
}

/// One request as the server read it.
#[derive(Debug, Clone)]
struct Seen {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A fake judge on 127.0.0.1: every request is recorded and answered by `behaviour(index, body)`;
/// it counts the most requests in flight at once.
struct FakeJudge {
    base_url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    max_in_flight: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    port: u16,
}

type Behaviour = dyn Fn(usize, &Value) -> Reply + Send + Sync;

impl FakeJudge {
    fn start(behaviour: impl Fn(usize, &Value) -> Reply + Send + Sync + 'static) -> FakeJudge {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let behaviour: Arc<Behaviour> = Arc::new(behaviour);
        let (seen2, max2, stop2) = (seen.clone(), max_in_flight.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (seen, max, in_flight, behaviour) =
                    (seen2.clone(), max2.clone(), in_flight.clone(), behaviour.clone());
                std::thread::spawn(move || serve(stream, &seen, &max, &in_flight, &*behaviour));
            }
        });
        FakeJudge { base_url: format!("http://127.0.0.1:{port}"), seen, max_in_flight, stop, port }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeJudge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    stream: TcpStream,
    seen: &Mutex<Vec<Seen>>,
    max: &AtomicUsize,
    in_flight: &AtomicUsize,
    behaviour: &Behaviour,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return; // the wake-up connection
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    max.fetch_max(now, Ordering::SeqCst);
    let index = {
        let mut seen = seen.lock().unwrap();
        seen.push(Seen { request_line: request_line.trim_end().to_string(), headers, body: body.clone() });
        seen.len() - 1
    };
    let reply = behaviour(index, &body);
    std::thread::sleep(reply.delay);
    in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut stream = stream;
    let head = format!(
        "HTTP/1.1 {} Fake\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reply.body.len()
    );
    // The client may have given up (timeout tests): ignore write errors.
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(reply.body.as_bytes()));
}

fn config(base_url: &str) -> JudgeConfig {
    JudgeConfig { rubric: Some("Be correct.".into()), backoff_s: 0.01, ..JudgeConfig::new(base_url) }
}

fn judge(config: JudgeConfig) -> JudgeVerifier {
    JudgeVerifier::new(config).unwrap()
}

fn task_with(prompt: &str, extra: Value) -> Task {
    let mut task = Task { prompt: Some(prompt.into()), ..Task::default() };
    task.extra = extra.as_object().unwrap().clone();
    task
}

#[test]
fn rubric_prompt_and_completion_rendered_into_the_request() {
    let server = FakeJudge::start(|_, _| Reply::chat("Fine.\nSCORE: 8"));
    let config = JudgeConfig {
        model: Some("judge-model".into()),
        api_key: Some("sk-test".into()),
        system: Some("You are strict.".into()),
        template: "Task: {prompt}\nRubric:\n{rubric}\nResponse: {completion}\nScore {min_score}..{max_score} as {label}: n. {unknown} {".into(),
        min_score: 1.0,
        max_score: 9.5,
        temperature: 0.25,
        max_tokens: 77,
        ..JudgeConfig::new(format!("{}/", server.base_url))
    };
    let v = judge(config);
    let task = task_with("Write a haiku about rain.", json!({ "rubric": ["5-7-5 syllables", "mentions rain"] }));
    // Only the answer after </think> is judged; a placeholder inside it is not filled in.
    let verdict = v.verify(&task, "<think>draft {rubric}</think> Soft rain on {rubric} roofs ").unwrap();
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].request_line, "POST /v1/chat/completions HTTP/1.1");
    assert_eq!(seen[0].header("authorization"), Some("Bearer sk-test"));
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    let expected = json!({
        "model": "judge-model",
        "messages": [
            { "role": "system", "content": "You are strict." },
            { "role": "user", "content": "Task: Write a haiku about rain.\nRubric:\n- 5-7-5 syllables\n- mentions rain\nResponse: Soft rain on {rubric} roofs\nScore 1..9.5 as SCORE: n. {unknown} {" },
        ],
        "temperature": 0.25,
        "max_tokens": 77,
        "stream": false,
    });
    assert_eq!(seen[0].body, expected);
    // The verdict keeps the request and the judge's text.
    assert_eq!(verdict.detail["request"], expected);
    assert_eq!(verdict.detail["judgement"], "Fine.\nSCORE: 8");
    assert_eq!(verdict.detail["url"], format!("{}/v1/chat/completions", server.base_url));
    assert_eq!(verdict.outcome, Outcome::Correct);
    assert!((verdict.reward - 7.0 / 8.5).abs() < 1e-6);
}

#[test]
fn the_default_template_and_rubric_sources() {
    let server = FakeJudge::start(|_, _| Reply::chat("SCORE: 10"));
    // The default template, with the task's own rubric in a field of another name.
    let v = judge(JudgeConfig { rubric_field: "criteria".into(), ..JudgeConfig::new(&server.base_url) });
    let task = task_with("Name a prime.", json!({ "criteria": "The number must be prime." }));
    let verdict = v.verify(&task, "Seven.").unwrap();
    assert_eq!(verdict.reward, 1.0);
    let user = server.seen()[0].body["messages"][0]["content"].as_str().unwrap().to_string();
    assert!(user.contains("## Task\nName a prime.\n"), "{user}");
    assert!(user.contains("## Rubric\nThe number must be prime.\n"), "{user}");
    assert!(user.contains("## Response\nSeven.\n"), "{user}");
    assert!(user.contains("SCORE: <number>\nwhere <number> is between 0 and 10"), "{user}");
    assert!(server.seen()[0].body.get("model").is_none());
    assert!(server.seen()[0].header("authorization").is_none());

    // A fixed rubric wins over the task's field.
    let fixed = judge(JudgeConfig { rubric: Some("Be brief.".into()), ..JudgeConfig::new(&server.base_url) });
    fixed.verify(&task, "Seven.").unwrap();
    let user = server.seen()[1].body["messages"][0]["content"].as_str().unwrap().to_string();
    assert!(user.contains("## Rubric\nBe brief.\n"), "{user}");

    // No rubric, or a rubric that is not text, or no prompt: the task is unreadable, nothing is sent.
    let by_field = judge(JudgeConfig::new(&server.base_url));
    let none = by_field.verify(&task_with("p", json!({})), "x");
    assert!(matches!(&none, Err(VerifyError::InvalidTask(m)) if m.contains("rubric")), "{none:?}");
    let number = by_field.verify(&task_with("p", json!({ "rubric": 3 })), "x");
    assert!(matches!(number, Err(VerifyError::InvalidTask(_))), "{number:?}");
    let no_prompt = fixed.verify(&Task::default(), "x");
    assert!(matches!(no_prompt, Err(VerifyError::MissingField("prompt"))), "{no_prompt:?}");
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn scores_are_parsed_and_normalised() {
    let replies =
        ["The answer is right.\nSCORE: 7", "SCORE: 2.5", "<think>Maybe SCORE: 1?</think>\nOn reflection:\nSCORE: 9"];
    let server = FakeJudge::start(move |i, _| Reply::chat(replies[i]));
    let v = judge(config(&server.base_url));
    let task = Task { prompt: Some("q".into()), ..Task::default() };
    let first = v.verify(&task, "a").unwrap();
    assert_eq!((first.outcome, first.detail["score"].clone()), (Outcome::Correct, json!(7.0)));
    assert!((first.reward - 0.7).abs() < 1e-6);
    let second = v.verify(&task, "a").unwrap();
    assert_eq!((second.outcome, second.reward), (Outcome::Incorrect, 0.25));
    // The judge's own reasoning before its </think> is not read.
    let third = v.verify(&task, "a").unwrap();
    assert!((third.reward - 0.9).abs() < 1e-6, "{:?}", third);
    assert_eq!(third.detail["attempts"], 1);
}

#[test]
fn the_score_contract_is_strict() {
    let ok = |text: &str| parse_score(text, "SCORE", 0.0, 10.0);
    assert_eq!(ok("SCORE: 7"), Ok(7.0));
    assert_eq!(ok("  SCORE:   7.5  "), Ok(7.5));
    assert_eq!(ok("reasoning\nSCORE: 0\n"), Ok(0.0));
    assert_eq!(ok("SCORE: 10"), Ok(10.0));
    assert_eq!(ok("Score breakdown below.\nSCORE: 3"), Ok(3.0));
    let why = |text: &str| ok(text).unwrap_err();
    assert!(why("Looks good.").contains("no `SCORE: <number>` line"));
    assert!(why("SCORE: 4\nSCORE: 5").contains("2 `SCORE:` lines"));
    assert!(why("SCORE: 7/10").contains("not a plain number"));
    assert!(why("SCORE: 1e1").contains("not a plain number"));
    assert!(why("SCORE: NaN").contains("not a plain number"));
    assert!(why("SCORE: seven").contains("not a plain number"));
    assert!(why("SCORE:").contains("not a plain number"));
    assert!(why("score: 7").contains("label must be `SCORE`"));
    assert!(why("SCORE: 11").contains("outside [0, 10]"));
    assert!(why("SCORE: -1").contains("outside"));
    assert!(why("**SCORE: 7**").contains("no `SCORE"));
}

#[test]
fn malformed_judgements_are_errors_with_the_text() {
    let replies = [
        Reply::chat("I think it is quite good."),
        Reply::chat("SCORE: 3\nSCORE: 4"),
        Reply::chat("SCORE: 12"),
        Reply { delay: Duration::ZERO, status: 200, body: "<html>not json</html>".into() },
        Reply { delay: Duration::ZERO, status: 200, body: json!({ "choices": [] }).to_string() },
    ];
    let replies = Mutex::new(replies.into_iter().map(Some).collect::<Vec<_>>());
    let server = FakeJudge::start(move |i, _| replies.lock().unwrap()[i].take().unwrap());
    let v = judge(config(&server.base_url));
    let task = Task { prompt: Some("q".into()), ..Task::default() };
    let check = |judgement: Option<&str>, error: &str| {
        let verdict = v.verify(&task, "a").unwrap();
        assert_eq!((verdict.outcome, verdict.reward), (Outcome::Error, 0.0), "{verdict:?}");
        assert!(verdict.detail["error"].as_str().unwrap().contains(error), "{verdict:?}");
        assert!(verdict.detail["request"]["messages"].is_array());
        match judgement {
            Some(text) => assert_eq!(verdict.detail["judgement"], text),
            None => assert!(verdict.detail["response"].is_string()),
        }
    };
    check(Some("I think it is quite good."), "malformed judgement: no `SCORE: <number>` line");
    check(Some("SCORE: 3\nSCORE: 4"), "2 `SCORE:` lines");
    check(Some("SCORE: 12"), "outside [0, 10]");
    check(None, "not a chat completion");
    check(None, "not a chat completion");
    // A malformed judgement is not retried.
    assert_eq!(server.seen().len(), 5);
}

#[test]
fn server_errors_are_retried_then_reported() {
    let server = FakeJudge::start(|_, _| Reply { delay: Duration::ZERO, status: 500, body: "overloaded".into() });
    let v = judge(JudgeConfig { retries: 2, ..config(&server.base_url) });
    let task = Task { prompt: Some("q".into()), ..Task::default() };
    let verdict = v.verify(&task, "a").unwrap();
    assert_eq!((verdict.outcome, verdict.reward), (Outcome::Error, 0.0));
    assert_eq!(verdict.detail["status"], 500);
    assert_eq!(verdict.detail["response"], "overloaded");
    assert_eq!(verdict.detail["attempts"], 3);
    assert!(verdict.detail["error"].as_str().unwrap().contains("HTTP 500 (after 3 tries)"), "{verdict:?}");
    assert_eq!(server.seen().len(), 3);

    // A 500 then a good answer: the retry succeeds.
    let flaky = FakeJudge::start(|i, _| match i {
        0 => Reply { delay: Duration::ZERO, status: 503, body: "busy".into() },
        _ => Reply::chat("SCORE: 6"),
    });
    let verdict = judge(config(&flaky.base_url)).verify(&task, "a").unwrap();
    assert_eq!((verdict.outcome, verdict.detail["attempts"].clone()), (Outcome::Correct, json!(2)));

    // A 4xx other than 429 is not retried.
    let missing = FakeJudge::start(|_, _| Reply { delay: Duration::ZERO, status: 404, body: "no such model".into() });
    let verdict = judge(config(&missing.base_url)).verify(&task, "a").unwrap();
    assert_eq!((verdict.outcome, verdict.detail["status"].clone()), (Outcome::Error, json!(404)));
    assert_eq!(missing.seen().len(), 1);
}

#[test]
fn no_server_is_an_error_after_retries() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let v = judge(JudgeConfig { retries: 1, ..config(&format!("http://127.0.0.1:{port}")) });
    let verdict = v.verify(&Task { prompt: Some("q".into()), ..Task::default() }, "a").unwrap();
    assert_eq!(verdict.outcome, Outcome::Error);
    assert_eq!(verdict.detail["attempts"], 2);
    assert!(verdict.detail["error"].as_str().unwrap().contains("request failed"), "{verdict:?}");
}

#[test]
fn a_slow_judge_is_a_timeout() {
    let server =
        FakeJudge::start(|_, _| Reply { delay: Duration::from_secs(3), status: 200, body: chat_body("SCORE: 5") });
    let v = judge(JudgeConfig { timeout_s: 0.3, ..config(&server.base_url) });
    let start = Instant::now();
    let verdict = v.verify(&Task { prompt: Some("q".into()), ..Task::default() }, "a").unwrap();
    let took = start.elapsed();
    assert_eq!((verdict.outcome, verdict.reward), (Outcome::Timeout, 0.0), "{verdict:?}");
    assert!(verdict.detail["error"].as_str().unwrap().contains("timed out"), "{verdict:?}");
    assert!(verdict.detail["request"].is_object());
    assert!(took < Duration::from_millis(2000), "took {took:?}");
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn a_burst_stays_within_the_concurrency_limit() {
    let server = FakeJudge::start(|i, _| Reply {
        delay: Duration::from_millis(60),
        status: 200,
        body: chat_body(&format!("SCORE: {}", i % 11)),
    });
    let v = judge(JudgeConfig { max_concurrency: 3, ..config(&server.base_url) });
    let items: Vec<(Task, String)> =
        (0..24).map(|i| (Task { prompt: Some(format!("q{i}")), ..Task::default() }, format!("a{i}"))).collect();
    let verdicts = score_batch(&v, &items, 24);
    assert_eq!(verdicts.len(), 24);
    assert!(verdicts.iter().all(|v| matches!(v.outcome, Outcome::Correct | Outcome::Incorrect)), "{verdicts:?}");
    assert_eq!(server.seen().len(), 24);
    // Never more than 3 at once, and more than one (the burst did run in parallel; 3 in practice,
    // 2 tolerated for a machine so loaded that the third never overlapped).
    let max = server.max_in_flight.load(Ordering::SeqCst);
    assert!((2..=3).contains(&max), "at most {max} requests were in flight at once");
    // Each verdict is its own request's: the prompt it sent is in its detail.
    for (i, verdict) in verdicts.iter().enumerate() {
        let user = verdict.detail["request"]["messages"][0]["content"].as_str().unwrap();
        assert!(user.contains(&format!("## Task\nq{i}\n")), "{user}");
    }
}

#[test]
fn settings_and_their_errors() {
    let spec = VerifierSpec::from_cli("judge", Some(json!({ "base_url": "http://127.0.0.1:9/v1", "name": "grm" })));
    let built = spec.unwrap().build().unwrap();
    assert_eq!(built.name(), "grm");
    let url = |base: &str| JudgeVerifier::new(JudgeConfig::new(base)).unwrap().url().to_string();
    assert_eq!(url("http://h:1"), "http://h:1/v1/chat/completions");
    assert_eq!(url("http://h:1/v1/"), "http://h:1/v1/chat/completions");
    assert_eq!(url("https://h/api/v1/chat/completions"), "https://h/api/v1/chat/completions");

    let err = |settings: Value| match VerifierSpec::from_cli("judge", Some(settings)).and_then(|s| s.build()) {
        Err(VerifyError::Config(message)) => message,
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("expected a config error"),
    };
    assert!(err(json!({})).contains("base_url"));
    assert!(err(json!({ "base_url": "127.0.0.1:8000" })).contains("base_url"));
    assert!(err(json!({ "base_url": "http://h", "min_score": 5, "max_score": 5 })).contains("max_score"));
    assert!(err(json!({ "base_url": "http://h", "pass_score": 11 })).contains("pass_score"));
    assert!(err(json!({ "base_url": "http://h", "template": "{rubric} only" })).contains("{completion}"));
    assert!(err(json!({ "base_url": "http://h", "template": "{completion} only" })).contains("{rubric}"));
    assert!(err(json!({ "base_url": "http://h", "max_concurrency": 0 })).contains("max_concurrency"));
    assert!(err(json!({ "base_url": "http://h", "timeout_s": 0 })).contains("timeout_s"));
    assert!(err(json!({ "base_url": "http://h", "score_label": "SCORE:" })).contains("score_label"));
    assert!(err(json!({ "base_url": "http://h", "api_key_env": "RLVR_TEST_SURELY_UNSET_KEY" })).contains("api_key_env"));
    assert!(err(json!({ "base_url": "http://h", "api_key": "k", "api_key_env": "HOME" })).contains("api_key_env"));
    assert!(err(json!({ "base_url": "http://h", "temprature": 0.5 })).contains("temprature"));
}

#[test]
fn the_api_key_comes_from_the_environment() {
    let server = FakeJudge::start(|_, _| Reply::chat("SCORE: 5"));
    // A variable only this test sets.
    std::env::set_var("RLVR_JUDGE_TEST_KEY", "sk-from-env");
    let v = judge(JudgeConfig { api_key_env: Some("RLVR_JUDGE_TEST_KEY".into()), ..config(&server.base_url) });
    v.verify(&Task { prompt: Some("q".into()), ..Task::default() }, "a").unwrap();
    assert_eq!(server.seen()[0].header("authorization"), Some("Bearer sk-from-env"));
}
