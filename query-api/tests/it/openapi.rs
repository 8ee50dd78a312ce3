//! The OpenAPI document at `GET /openapi.json`, against the code and a real server.
//!
//! - It parses as OpenAPI 3.1 (`oas3`), every `$ref` resolves, operations carry the bearer
//!   scheme and the problem responses that apply.
//! - It documents exactly the routes the router serves: the routes are read from the `.route(…)`
//!   calls in `src/` (a route added without docs fails), and every documented operation is
//!   probed on the live router (a documented route that is not served fails).
//! - Real responses of a real server (TCP, reqwest) over a SQLite store holding a replay of the
//!   shipped H100 power trace on a CAISO_NORTH instance, enriched then restated with WattTime's
//!   real CAISO_NORTH marginal series, validate against the documented schema of their status
//!   (JSON Schema 2020-12, `jsonschema`), have the documented content type and headers, and
//!   hold no field the schema does not name. Every documented operation has its success
//!   response validated; the problem documents of 400, 401, 403, 404, 409, 415, 422, 429 and
//!   503 too.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::{header, Method, StatusCode};
use common::*;
use serde_json::{json, Value};
use wattprint_core::intensity::{IntensityJoin, JoinedIntensity, MarginalSeries, RegionIntensity};
use wattprint_core::{Bucket, GramsPerKwh, RegionId, UnixMillis};
use wattprint_query_api::time::parse_instant;
use wattprint_query_api::{mint_role_token, ApiLimits, ApiState, RateLimit, RateLimiter, Role};
use wattprint_store::{EnrichedSample, SqliteStore, Store};

const REGION: &str = "CAISO_NORTH";
const PUE: f64 = 1.3;
/// The replayed run: an hour from 2023-07-08T06:02:10Z, inside WattTime's series (which ends
/// 2023-07-08T23:55Z: the 24 h Flexible Start window of the defaults runs past it).
const RUN_FROM: &str = "2023-07-08T06:02:10Z";
const RUN_MS: i64 = 3_600_000;

// ---------------------------------------------------------------------------------------------
// Fixture: real data on a real server

/// WattTime's CAISO_NORTH actual MOER, (ms, g/kWh).
fn read_moer() -> Vec<(i64, f64)> {
    let text = std::fs::read_to_string(data("moer/watttime2023_caiso-north_actual.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let (t, v) = line.split_once(',').unwrap();
            let at = parse_instant("t", &format!("{}Z", t.replace(' ', "T"))).unwrap();
            (at.0, v.parse().unwrap())
        })
        .collect()
}

/// One GPU's samples: the trace's phases looped over `[from, to)`, enriched by `intensity`.
fn gpu_samples(
    gpu: &str,
    from: i64,
    to: i64,
    skip: usize,
    intensity: impl Fn(Bucket) -> Option<JoinedIntensity>,
) -> Vec<EnrichedSample> {
    let mut out = Vec::new();
    let mut t = from;
    for (seq, &(ms, mj)) in trace_phases().iter().cycle().skip(skip).enumerate() {
        if t + ms > to {
            break;
        }
        let s = enriched(
            "acme",
            "i-ca",
            gpu,
            REGION,
            PUE,
            seq as u64,
            t,
            t + ms,
            mj,
            &intensity,
        );
        out.push(s);
        t += ms;
    }
    out
}

fn camx() -> (GramsPerKwh, String) {
    // eGRID 2023 CAMX total output rate, 429.983 lb/MWh.
    (
        GramsPerKwh::from_lb_per_mwh(429.983),
        "egrid2023:CAMX".into(),
    )
}

/// A live server and what went into its store.
struct Fixture {
    server: Live,
    /// The replayed run.
    from: i64,
    to: i64,
    /// Energy of every i-ca sample, mJ (all inside `[from, to)`).
    samples_mj: u64,
    samples: usize,
}

/// The common harness's two tenants, plus acme's CAISO_NORTH instance `i-ca` with two H100s
/// replaying the real trace for an hour: GPU-c1 enriched while only the eGRID average was
/// known, GPU-c2 while nothing was; then WattTime's actual series arrives and the store
/// restates both (average → actual, none → actual), as the enricher's ledger refresh does.
/// The server's what-ifs run on that series.
async fn fixture() -> Fixture {
    let h = harness().await;
    let store: Arc<SqliteStore> = h.store.clone();
    store
        .upsert_inventory(&[instance(
            "acme",
            "i-ca",
            REGION,
            Some("95112"),
            vec![gpu("GPU-c1", H100), gpu("GPU-c2", H100)],
        )])
        .await
        .unwrap();
    let region = RegionId::from(REGION);
    let mut average_only = IntensityJoin::new(15 * 60_000);
    average_only.insert(
        region.clone(),
        RegionIntensity {
            marginal: None,
            replay: false,
            average: Some(camx()),
        },
    );
    let from = parse_instant("from", RUN_FROM).unwrap().0;
    let to = from + RUN_MS;
    let mut samples = gpu_samples("GPU-c1", from, to, 0, |b| average_only.lookup(&region, b));
    samples.extend(gpu_samples("GPU-c2", from + 7_000, to, 1, |_| None));
    let outcome = store.write_samples(&samples).await.unwrap();
    assert_eq!(outcome.inserted as usize, samples.len());

    let series = MarginalSeries::new(
        "watttime:CAISO_NORTH",
        read_moer()
            .into_iter()
            .map(|(t, v)| (UnixMillis(t), GramsPerKwh(v)))
            .collect(),
    )
    .unwrap();
    let mut join = IntensityJoin::new(15 * 60_000);
    join.insert(
        region.clone(),
        RegionIntensity {
            marginal: Some(series),
            replay: false,
            average: Some(camx()),
        },
    );
    let restated = store
        .restate(
            &region,
            UnixMillis(from - from.rem_euclid(B)),
            UnixMillis(to + B),
            &join,
        )
        .await
        .unwrap();
    assert!(restated.intervals >= 2 * 12, "{restated:?}");

    let dyn_store: Arc<dyn Store> = store;
    let state =
        ApiState::new(dyn_store, auth(), catalog(), ApiLimits::default()).with_intensity(join);
    Fixture {
        server: Live::start(state).await,
        from,
        to,
        samples_mj: samples.iter().map(|s| s.sample.energy.0).sum(),
        samples: samples.len(),
    }
}

/// A server on 127.0.0.1:0 speaking HTTP, and a client.
struct Live {
    base: String,
    http: reqwest::Client,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A response as received.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
    bytes: Vec<u8>,
}

impl Answer {
    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Live {
    async fn start(state: ApiState) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(wattprint_query_api::serve(listener, state, async move {
            let _ = stop_rx.await;
        }));
        Self {
            base,
            http: reqwest::Client::new(),
            stop,
            task,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let body = body.map(|b| (Some("application/json"), b.to_string()));
        self.send(method, path, bearer, body).await
    }

    /// A request with a raw body and, if given, its content type.
    async fn send(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<(Option<&str>, String)>,
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if let Some((ctype, b)) = body {
            if let Some(c) = ctype {
                req = req.header(header::CONTENT_TYPE, c);
            }
            req = req.body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap().to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            bytes,
        }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

fn role_token(role: Role, name: &str) -> String {
    mint_role_token(
        &auth(),
        role,
        name,
        SystemTime::now(),
        Duration::from_secs(600),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The document

/// The served document, parsed.
struct Doc {
    json: Value,
}

/// `(METHOD, path template)` of an operation.
type Op = (String, String);

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

impl Doc {
    async fn fetch(server: &Live) -> Doc {
        let r = server.call(Method::GET, "/openapi.json", None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.content_type(), "application/json");
        let again = server.call(Method::GET, "/openapi.json", None, None).await;
        assert_eq!(r.bytes, again.bytes, "the document is built once");
        Doc { json: r.body }
    }

    /// Follows `$ref`s (`#/…` JSON pointers into the document) until a value that is not one.
    fn resolve<'a>(&'a self, mut v: &'a Value) -> &'a Value {
        for _ in 0..32 {
            let Some(r) = v.get("$ref").and_then(Value::as_str) else {
                return v;
            };
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("external $ref {r}"));
            v = self
                .json
                .pointer(pointer)
                .unwrap_or_else(|| panic!("$ref {r} does not resolve"));
        }
        panic!("$ref cycle at {v}")
    }

    fn operations(&self) -> BTreeMap<Op, &Value> {
        let mut out = BTreeMap::new();
        for (path, item) in self.json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if METHODS.contains(&method.as_str()) {
                    out.insert((method.to_uppercase(), path.clone()), op);
                }
            }
        }
        out
    }

    fn operation(&self, method: &Method, template: &str) -> &Value {
        let op = &self.json["paths"][template][method.as_str().to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not documented");
        op
    }

    /// The documented response of an operation for `status` (resolved).
    fn response(&self, method: &Method, template: &str, status: StatusCode) -> &Value {
        let op = self.operation(method, template);
        let r = &op["responses"][status.as_str()];
        assert!(
            r.is_object(),
            "{method} {template} answered {status}, which its documentation does not list"
        );
        self.resolve(r)
    }

    /// A validator for `schema`, its `#/components/…` references resolving in this document.
    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.json["components"],
            "allOf": [schema],
        });
        jsonschema::draft202012::new(&root).unwrap()
    }

    /// What is wrong with `value` under `schema`: JSON Schema errors, and object keys the
    /// schema does not name (so a field added to a type but not to its documentation shows).
    fn problems(&self, schema: &Value, value: &Value) -> Vec<String> {
        let validator = self.validator(schema);
        let mut out: Vec<String> = validator
            .iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        let mut undocumented = Vec::new();
        self.undocumented(schema, value, "$", &mut undocumented);
        out.extend(
            undocumented
                .into_iter()
                .map(|at| format!("{at} is not in the schema")),
        );
        out
    }

    /// Asserts [`Self::problems`] finds none.
    fn check(&self, schema: &Value, value: &Value, what: &str) {
        let problems = self.problems(schema, value);
        assert!(
            problems.is_empty(),
            "{what}: {problems:#?}\nbody: {value:#}"
        );
    }

    /// Collects the property schemas an object schema names, through `$ref` and `allOf`.
    fn properties<'a>(&'a self, schema: &'a Value, out: &mut BTreeMap<String, &'a Value>) {
        let schema = self.resolve(schema);
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                out.insert(k.clone(), v);
            }
        }
        for item in schema["allOf"].as_array().into_iter().flatten() {
            self.properties(item, out);
        }
    }

    /// Paths of object keys in `value` that `schema` does not name.
    fn undocumented(&self, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
        let schema = self.resolve(schema);
        for key in ["anyOf", "oneOf"] {
            if let Some(branches) = schema.get(key).and_then(Value::as_array) {
                let mut best: Option<Vec<String>> = None;
                for b in branches {
                    if !self.validator(b).is_valid(value) {
                        continue;
                    }
                    let mut errs = Vec::new();
                    self.undocumented(b, value, at, &mut errs);
                    if best.as_ref().is_none_or(|e| errs.len() < e.len()) {
                        best = Some(errs);
                    }
                }
                out.extend(best.unwrap_or_else(|| vec![format!("{at}: no {key} branch")]));
                return;
            }
        }
        match value {
            Value::Object(map) => {
                let mut props = BTreeMap::new();
                self.properties(schema, &mut props);
                let extra = schema.get("additionalProperties").filter(|a| a.is_object());
                for (k, v) in map {
                    match props.get(k).copied().or(extra) {
                        Some(s) => self.undocumented(s, v, &format!("{at}.{k}"), out),
                        None => out.push(format!("{at}.{k}")),
                    }
                }
            }
            Value::Array(items) => {
                if let Some(s) = schema.get("items") {
                    for (i, v) in items.iter().enumerate() {
                        self.undocumented(s, v, &format!("{at}[{i}]"), out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Every `$ref` string in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_openapi_3_1_with_units_auth_and_problems() {
    let f = fixture().await;
    let doc = Doc::fetch(&f.server).await;
    let text = serde_json::to_string(&doc.json).unwrap();
    let spec = oas3::from_json(&text).unwrap();
    assert_eq!(spec.validate_version().unwrap().to_string(), "3.1.0");
    assert_eq!(spec.info.title, "Wattprint query API");
    assert_eq!(spec.info.version, env!("CARGO_PKG_VERSION"));
    let description = spec.info.description.clone().unwrap();
    for unit in [
        "energy_kwh",
        "_mj",
        "co2e_g",
        "_g_per_kwh",
        "RFC 3339",
        "problem+json",
    ] {
        assert!(description.contains(unit), "info.description names {unit}");
    }
    assert_eq!(spec.operations().count(), doc.operations().len());
    eprintln!(
        "openapi.json: {} bytes, {} operations, {} schemas, {} reusable responses",
        text.len(),
        doc.operations().len(),
        doc.json["components"]["schemas"].as_object().unwrap().len(),
        doc.json["components"]["responses"]
            .as_object()
            .unwrap()
            .len()
    );

    let mut all = Vec::new();
    refs(&doc.json, &mut all);
    assert!(
        all.len() > 50,
        "the document uses references: {}",
        all.len()
    );
    for r in &all {
        doc.resolve(&json!({ "$ref": r }));
    }

    let scheme = &doc.json["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"], &scheme["bearerFormat"]),
        (&json!("http"), &json!("bearer"), &json!("JWT"))
    );
    let problem = &doc.json["components"]["schemas"]["ProblemDocument"];
    let required: BTreeSet<&str> = problem["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        required,
        BTreeSet::from(["type", "title", "status", "detail"])
    );

    let mut ids = BTreeSet::new();
    for ((method, path), op) in doc.operations() {
        let id = op["operationId"].as_str().unwrap();
        assert!(ids.insert(id.to_owned()), "operationId {id} twice");
        assert!(op["summary"].is_string(), "{method} {path} has a summary");
        assert!(op["tags"].as_array().is_some_and(|t| !t.is_empty()));
        let responses = op["responses"].as_object().unwrap();
        let success: Vec<&String> = responses.keys().filter(|s| s.starts_with('2')).collect();
        assert_eq!(success.len(), 1, "{method} {path}: one success response");
        for (status, r) in responses {
            let r = doc.resolve(r);
            assert!(r["description"].is_string(), "{method} {path} {status}");
            if !status.starts_with('2') {
                assert!(
                    r["content"]["application/problem+json"]["schema"]["$ref"]
                        == "#/components/schemas/ProblemDocument",
                    "{method} {path} {status} is a problem document"
                );
            }
        }
        // Path parameters are declared.
        for name in path
            .split('{')
            .skip(1)
            .map(|s| s.split('}').next().unwrap())
        {
            let declared = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["in"] == "path" && p["name"] == name && p["required"] == true);
            assert!(declared, "{method} {path} declares path parameter {name}");
        }
        let secured = op["security"] == json!([{ "bearer": [] }]);
        if path.starts_with("/v1/") {
            assert!(secured, "{method} {path} takes a bearer token");
            for status in ["401", "403", "429", "500"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} lists {status}: every /v1 route authenticates, authorizes \
                     and rate-limits"
                );
            }
            if op["parameters"].as_array().is_some_and(|p| !p.is_empty())
                || op.get("requestBody").is_some()
            {
                assert!(responses.contains_key("400"), "{method} {path} lists 400");
            }
        } else {
            assert!(
                op.get("security").is_none(),
                "{method} {path} needs no token"
            );
        }
    }
    // The series step is the enum the server parses.
    assert_eq!(
        doc.json["components"]["schemas"]["Step"]["enum"],
        json!(["raw", "5m", "1h", "1d"])
    );
    f.server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Routes: the router's against the document's

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The text from an opening bracket at the start of `text` to its matching close.
fn bracketed(text: &str, open: char, close: char) -> &str {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return &text[..=i];
            }
        }
    }
    panic!("unbalanced {open}{close}")
}

/// Handlers whose inputs their `#[utoipa::path]` does not document: a `Query<T>` extractor
/// without `T` in `params(…)`, a `Json<T>` body without `request_body`.
fn undocumented_handler_inputs() -> Vec<String> {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut out = Vec::new();
    let mut annotated = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("#[utoipa::path(") {
            let attr = bracketed(&text[at + 1..], '[', ']');
            let after = &text[at + 1 + attr.len()..];
            let fn_at = after.find("fn ").unwrap();
            let sig = &after[fn_at..];
            let name: String = sig[3..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let args = bracketed(&sig[sig.find('(').unwrap()..], '(', ')');
            annotated += 1;
            for (q, _) in args.match_indices("Query<") {
                let ty: String = args[q + 6..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !attr.contains(&ty) {
                    out.push(format!("{name}: query {ty} not in params(…)"));
                }
            }
            if args.contains("Json<") && !attr.contains("request_body") {
                out.push(format!("{name}: a JSON body without request_body"));
            }
        }
    }
    assert!(annotated >= 14, "{annotated} annotated handlers read");
    out
}

/// `(METHOD, path)` of every `.route("path", method(handler)…)` call in `src/`.
fn routes_in_source() -> BTreeSet<Op> {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut routes = BTreeSet::new();
    let mut portal = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains(".nest("),
            "{}: nested routers have prefixes this test does not read; teach it",
            file.display()
        );
        for (at, _) in text.match_indices(".route(") {
            let rest = &text[at + ".route(".len()..];
            let rest = rest.trim_start();
            let rest = rest
                .strip_prefix('"')
                .unwrap_or_else(|| panic!("{}: .route( without a literal path", file.display()));
            let (path, rest) = rest.split_once('"').unwrap();
            // The portal's static files and its sign-in settings (`portal.rs`) are a page, not
            // API operations.
            if path == "/portal" || path.starts_with("/portal/") {
                portal += 1;
                continue;
            }
            let rest = rest.trim_start().strip_prefix(',').unwrap();
            // The method router: identifiers at depth 0 followed by `(` are the methods.
            let (mut depth, mut ident, mut methods) = (0, String::new(), Vec::new());
            for c in rest.chars() {
                match c {
                    '(' => {
                        if depth == 0 {
                            assert!(
                                METHODS.contains(&ident.as_str()),
                                "{}: route {path}: cannot read method `{ident}`",
                                file.display()
                            );
                            methods.push(ident.to_uppercase());
                        }
                        depth += 1;
                        ident.clear();
                    }
                    ')' if depth == 0 => break,
                    ')' => depth -= 1,
                    c if c.is_alphanumeric() || c == '_' => ident.push(c),
                    _ => ident.clear(),
                }
            }
            assert!(!methods.is_empty(), "{path}: no method read");
            for m in methods {
                assert!(
                    routes.insert((m.clone(), path.to_owned())),
                    "{m} {path} routed twice"
                );
            }
        }
    }
    assert_eq!(
        portal, 4,
        "the portal's routes: /portal, /portal/, /portal/config.json, /portal/{{*path}}"
    );
    routes
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_is_served() {
    let f = fixture().await;
    let doc = Doc::fetch(&f.server).await;
    let served = routes_in_source();
    let inputs = undocumented_handler_inputs();
    assert!(inputs.is_empty(), "{inputs:#?}");
    // The reader is not blind: it sees the routes this API is known to have.
    for known in [
        ("GET", "/healthz"),
        ("GET", "/openapi.json"),
        ("GET", "/v1/instances/{id}/series"),
        ("POST", "/v1/workloads"),
        ("GET", "/v1/operator/tenants/{tenant}/summary"),
    ] {
        assert!(
            served.contains(&(known.0.to_owned(), known.1.to_owned())),
            "{known:?} not read from src/: {served:?}"
        );
    }
    let documented: BTreeSet<Op> = doc.operations().into_keys().collect();
    let undocumented: Vec<&Op> = served.difference(&documented).collect();
    let unserved: Vec<&Op> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes without #[utoipa::path] in openapi::ApiDoc: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented but not routed: {unserved:?}"
    );

    // And the live router answers each documented operation from a handler, not from its
    // fallbacks (404 "no such route", 405).
    let reader = role_token(Role::Reader, "acme");
    let probe = |path: &str| {
        path.split('/')
            .map(|seg| if seg.starts_with('{') { "probe" } else { seg })
            .collect::<Vec<_>>()
            .join("/")
    };
    let unrouted = f
        .server
        .call(Method::GET, "/v1/no-such-thing", Some(&reader), None)
        .await;
    assert_eq!(unrouted.status, StatusCode::NOT_FOUND);
    assert_eq!(unrouted.body["detail"], "no such route");
    for (method, path) in &documented {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (m != Method::GET).then(|| json!({}));
        let r = f
            .server
            .call(m, &probe(path), Some(&reader), body.as_ref())
            .await;
        assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !(r.status == StatusCode::NOT_FOUND && r.body["detail"] == "no such route"),
            "{method} {path} is documented but the router does not serve it"
        );
    }
    f.server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Responses against their schemas

/// Checks responses of the live server against the document, remembering what was checked.
struct Checker<'a> {
    doc: &'a Doc,
    server: &'a Live,
    checked: BTreeSet<(String, String, u16)>,
}

impl Checker<'_> {
    /// Sends the request, asserts `status`, and checks the body (and a JSON request body)
    /// against the documented schemas, the content type and the documented headers.
    async fn expect(
        &mut self,
        method: Method,
        template: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
        status: StatusCode,
    ) -> Value {
        let op = self.doc.operation(&method, template);
        if let Some(b) = body {
            let content = &self.doc.resolve(&op["requestBody"])["content"]["application/json"];
            assert!(
                content.is_object(),
                "{method} {template} documents its JSON body"
            );
            self.doc.check(
                &content["schema"],
                b,
                &format!("request {method} {template}"),
            );
        }
        let r = self.server.call(method.clone(), path, bearer, body).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        let documented = self.doc.response(&method, template, status);
        let content = documented["content"].as_object().unwrap();
        assert_eq!(
            content.len(),
            1,
            "{method} {template} {status}: one content type"
        );
        let (ctype, media) = content.iter().next().unwrap();
        assert_eq!(r.content_type(), ctype, "{method} {path} {status}");
        let what = format!("{method} {path} {status}");
        if template == "/openapi.json" {
            self.doc
                .validator(&media["schema"])
                .validate(&r.body)
                .unwrap();
        } else {
            self.doc.check(&media["schema"], &r.body, &what);
        }
        for (name, _) in documented["headers"].as_object().into_iter().flatten() {
            assert!(
                r.headers.contains_key(name.as_str()),
                "{what}: documented header {name} missing"
            );
        }
        self.checked
            .insert((method.to_string(), template.to_owned(), status.as_u16()));
        r.body
    }
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

#[tokio::test]
async fn real_responses_validate_against_their_schemas() {
    let f = fixture().await;
    let doc = Doc::fetch(&f.server).await;
    let mut c = Checker {
        doc: &doc,
        server: &f.server,
        checked: BTreeSet::new(),
    };
    let admin = token("acme");
    let reader = role_token(Role::Reader, "acme");
    let operator = role_token(Role::Operator, "billing@provider");
    let admin = Some(admin.as_str());
    let (g, p) = (Method::GET, Method::POST);
    let range = format!("from={}&to={}", f.from, f.to);

    c.expect(
        g.clone(),
        "/healthz",
        "/healthz",
        None,
        None,
        StatusCode::OK,
    )
    .await;
    c.expect(
        g.clone(),
        "/openapi.json",
        "/openapi.json",
        None,
        None,
        StatusCode::OK,
    )
    .await;

    let list = c
        .expect(
            g.clone(),
            "/v1/instances",
            "/v1/instances",
            admin,
            None,
            StatusCode::OK,
        )
        .await;
    let ids: Vec<&str> = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["i-a1", "i-a2", "i-ca"]);

    // Series: 5-minute steps cover the run, widened to whole steps, energy exact.
    let series = "/v1/instances/{id}/series";
    let s5 = c
        .expect(
            g.clone(),
            series,
            &format!("/v1/instances/i-ca/series?{range}&step=5m"),
            admin,
            None,
            StatusCode::OK,
        )
        .await;
    let points = s5["points"].as_array().unwrap();
    assert_eq!(points.len(), 13, "06:00 to 07:05");
    let energy: u64 = points
        .iter()
        .map(|p| p["energy_mj"].as_u64().unwrap())
        .sum();
    assert_eq!(energy, f.samples_mj);
    assert!(points
        .iter()
        .all(|p| p["intensity_kinds"]["actual"].as_u64() > Some(0)));
    let raw = c
        .expect(
            g.clone(),
            series,
            &format!("/v1/instances/i-ca/series?{range}&step=raw"),
            admin,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(raw["points"].as_array().unwrap().len(), f.samples);
    let hourly = c
        .expect(
            g.clone(),
            series,
            &format!("/v1/instances/i-ca/series?{range}&step=1h"),
            admin,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(hourly["points"].as_array().unwrap().len(), 2);
    // An empty raw series is both kinds of points list: the schema says anyOf.
    let empty = c
        .expect(
            g.clone(),
            series,
            &format!(
                "/v1/instances/i-ca/series?from={}&to={}&step=raw",
                f.to + B,
                f.to + 2 * B
            ),
            admin,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(empty["points"], json!([]));

    // Workloads: a closed one over the run, and an open one that gets labels and is closed.
    let body = json!({
        "label": "replayed H100 run",
        "instance_ids": ["i-ca"],
        "from": RUN_FROM,
        "to": f.to,
        "functional_unit": "training run",
        "functional_units": 4.0,
        "labels": {"team": "ml"},
    });
    let created = c
        .expect(
            p.clone(),
            "/v1/workloads",
            "/v1/workloads",
            admin,
            Some(&body),
            StatusCode::CREATED,
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let detail = c
        .expect(
            g.clone(),
            "/v1/workloads/{id}",
            &format!("/v1/workloads/{id}"),
            admin,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        detail["footprint"]["it_energy_mj"].as_u64(),
        Some(f.samples_mj)
    );
    assert_eq!(
        detail["footprint"]["provenance"]["intervals_missing_intensity"], 0,
        "restated: every interval has an actual"
    );
    // The checks are not vacuous: a field the documentation lacks, a wrong type, a missing
    // required field of a mirrored core type, each one fails.
    let schema = &doc.response(&g, "/v1/workloads/{id}", StatusCode::OK)["content"]
        ["application/json"]["schema"];
    let mut extra = detail.clone();
    extra["footprint"]["provenance"]["undocumented_field"] = json!(1);
    let mut wrong = detail.clone();
    wrong["footprint"]["it_energy_mj"] = json!("12");
    let mut short = detail.clone();
    short["footprint"]["provenance"]
        .as_object_mut()
        .unwrap()
        .remove("intervals_actual");
    let mut null_label = detail.clone();
    null_label["label"] = Value::Null;
    for (what, bad) in [
        ("extra", extra),
        ("wrong", wrong),
        ("short", short),
        ("null label", null_label),
    ] {
        assert!(!doc.problems(schema, &bad).is_empty(), "{what} passed");
    }
    let evidence = c
        .expect(
            g.clone(),
            "/v1/workloads/{id}/evidence",
            &format!("/v1/workloads/{id}/evidence"),
            admin,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        evidence["energy"]["it_energy_mj"],
        detail["footprint"]["it_energy_mj"]
    );
    let whatif = c
        .expect(
            g.clone(),
            "/v1/workloads/{id}/whatif",
            &format!("/v1/workloads/{id}/whatif"),
            admin,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(whatif["intensity_source"], "watttime:CAISO_NORTH");
    // The paper's defaults: windows of 6 and 12 h end before the series does (2023-07-09
    // 00:00); 18 and 24 h do not and are listed as unavailable. All four factors fit.
    assert_eq!(whatif["flexible_start"].as_array().unwrap().len(), 2);
    assert_eq!(whatif["unavailable"].as_array().unwrap().len(), 2);
    assert_eq!(whatif["pause_resume"].as_array().unwrap().len(), 4);

    let open = json!({
        "label": "still running",
        "instance_ids": ["i-ca"],
        "from": f.from,
        "functional_unit": "epoch",
        "functional_units": 1,
    });
    let open = c
        .expect(
            p.clone(),
            "/v1/workloads",
            "/v1/workloads",
            admin,
            Some(&open),
            StatusCode::CREATED,
        )
        .await;
    let open_id = open["id"].as_str().unwrap().to_owned();
    let labels = json!({"labels": {"team": "ml", "project": "wattprint"}});
    let labelled = c
        .expect(
            Method::PUT,
            "/v1/workloads/{id}/labels",
            &format!("/v1/workloads/{open_id}/labels"),
            admin,
            Some(&labels),
            StatusCode::OK,
        )
        .await;
    assert_eq!(labelled["labels"], labels["labels"]);
    let close = json!({"end": f.to});
    let closed = c
        .expect(
            p.clone(),
            "/v1/workloads/{id}/close",
            &format!("/v1/workloads/{open_id}/close"),
            admin,
            Some(&close),
            StatusCode::OK,
        )
        .await;
    assert_eq!(closed["to"], UnixMillis(f.to).to_rfc3339());
    let listed = c
        .expect(
            g.clone(),
            "/v1/workloads",
            "/v1/workloads?limit=1",
            admin,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(listed["workloads"].as_array().unwrap().len(), 1);
    assert!(
        listed["next_cursor"].is_string(),
        "two workloads, pages of one"
    );

    let summary = c
        .expect(
            g.clone(),
            "/v1/summary",
            &format!("/v1/summary?{range}"),
            admin,
            None,
            StatusCode::OK,
        )
        .await;
    let ca = summary["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance_id"] == "i-ca")
        .unwrap();
    assert_eq!(ca["it_energy_mj"].as_u64(), Some(f.samples_mj));

    let restatements = c
        .expect(
            g.clone(),
            "/v1/restatements",
            &format!("/v1/restatements?{range}"),
            admin,
            None,
            StatusCode::OK,
        )
        .await;
    let records = restatements["restatements"].as_array().unwrap();
    assert!(
        records.iter().any(|r| r["previous"].is_null()),
        "GPU-c2 had none"
    );
    assert!(
        records
            .iter()
            .any(|r| r["previous"]["kind"] == "fallback_average"),
        "GPU-c1 had the average"
    );
    assert!(records.iter().all(|r| r["current"]["kind"] == "actual"));
    let total: f64 = records.iter().map(|r| f64_of(&r["it_co2e_delta_g"])).sum();
    assert!((f64_of(&restatements["totals"]["it_co2e_delta_g"]) - total).abs() < 1e-6);

    // Statements: the months, and the fixture's month (preliminary: nothing issues it here).
    let months = c
        .expect(
            g.clone(),
            "/v1/statements",
            "/v1/statements",
            admin,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(months["statements"][0]["status"], "preliminary");
    let statement = c
        .expect(
            g.clone(),
            "/v1/statements/{period}",
            "/v1/statements/2023-07",
            admin,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(statement["period"], "2023-07");
    assert_eq!(statement["status"], "preliminary");
    let in_month: u64 = statement["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["it_energy_mj"].as_u64().unwrap())
        .sum();
    assert_eq!(statement["totals"]["it_energy_mj"].as_u64(), Some(in_month));
    for bad in ["/v1/statements/2023-13", "/v1/statements/2023-07.pdfx"] {
        c.expect(
            g.clone(),
            "/v1/statements/{period}",
            bad,
            admin,
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }

    // Operators.
    let op = Some(operator.as_str());
    let tenants = c
        .expect(
            g.clone(),
            "/v1/operator/tenants",
            "/v1/operator/tenants",
            op,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(tenants["tenants"][0]["tenant"], "acme");
    assert_eq!(tenants["tenants"][0]["instances"], 3);
    let billed = c
        .expect(
            g.clone(),
            "/v1/operator/tenants/{tenant}/summary",
            &format!("/v1/operator/tenants/acme/summary?{range}"),
            op,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(billed, summary, "the operator sees what the tenant sees");
    // The statement export is a file, CSV or Parquet by extension: each served with a content
    // type the document lists.
    let export = "/v1/operator/statements/{period}";
    let documented = doc.response(&g, export, StatusCode::OK)["content"].clone();
    for (ext, magic) in [("csv", "statement_id,"), ("parquet", "PAR1")] {
        let path = format!("/v1/operator/statements/2023-07.{ext}");
        let r = f.server.call(g.clone(), &path, op, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        let ctype = r.content_type().split(';').next().unwrap().to_owned();
        assert!(
            documented.get(&ctype).is_some(),
            "{path}: {ctype} in {documented}"
        );
        assert!(r.bytes.starts_with(magic.as_bytes()), "{path}");
    }
    c.checked.insert(("GET".into(), export.into(), 200));

    // Problem documents.
    let no_token = c
        .expect(
            g.clone(),
            "/v1/instances",
            "/v1/instances",
            None,
            None,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    assert_eq!(no_token["type"], "urn:wattprint:problem:unauthorized");
    let missing = c
        .expect(
            g.clone(),
            "/v1/workloads/{id}",
            "/v1/workloads/w-does-not-exist",
            admin,
            None,
            StatusCode::NOT_FOUND,
        )
        .await;
    assert_eq!(missing["status"], 404);
    c.expect(
        g.clone(),
        series,
        "/v1/instances/i-ca/series?step=7m",
        admin,
        None,
        StatusCode::BAD_REQUEST,
    )
    .await;
    c.expect(
        Method::PUT,
        "/v1/workloads/{id}/labels",
        &format!("/v1/workloads/{open_id}/labels"),
        Some(&reader),
        Some(&labels),
        StatusCode::FORBIDDEN,
    )
    .await;
    c.expect(
        g.clone(),
        "/v1/operator/tenants",
        "/v1/operator/tenants",
        admin,
        None,
        StatusCode::FORBIDDEN,
    )
    .await;
    let other_end = json!({"end": f.to + B});
    c.expect(
        p.clone(),
        "/v1/workloads/{id}/close",
        &format!("/v1/workloads/{open_id}/close"),
        admin,
        Some(&other_end),
        StatusCode::CONFLICT,
    )
    .await;
    // Two regions: no single intensity series to shift a run on.
    let two = create_workload_over(&f.server, &["i-a1", "i-a2"]).await;
    c.expect(
        g.clone(),
        "/v1/workloads/{id}/whatif",
        &format!("/v1/workloads/{two}/whatif"),
        admin,
        None,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    // A body not declared as JSON.
    let r = f
        .server
        .http
        .post(format!("{}/v1/workloads", f.server.base))
        .bearer_auth(token("acme"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let ctype = r.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    let problem: Value = r.json().await.unwrap();
    let documented = doc.response(&p, "/v1/workloads", StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let media = &documented["content"][&ctype];
    doc.check(&media["schema"], &problem, "415");

    // 503 and 429 from servers configured for them, over the same store.
    let h = harness().await;
    let store: Arc<dyn Store> = h.store.clone();
    let bare = Live::start(ApiState::new(
        store.clone(),
        auth(),
        catalog(),
        ApiLimits::default(),
    ))
    .await;
    let w = create_workload_over(&bare, &["i-a1"]).await;
    let mut c2 = Checker {
        doc: &doc,
        server: &bare,
        checked: BTreeSet::new(),
    };
    c2.expect(
        g.clone(),
        "/v1/workloads/{id}/whatif",
        &format!("/v1/workloads/{w}/whatif"),
        admin,
        None,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    c.checked.extend(c2.checked);
    bare.stop().await;
    let limiter = RateLimiter::new(RateLimit {
        per_second: 0.001,
        burst: 1,
    })
    .unwrap();
    let limited = Live::start(
        ApiState::new(store, auth(), catalog(), ApiLimits::default()).with_rate_limiter(limiter),
    )
    .await;
    let mut c3 = Checker {
        doc: &doc,
        server: &limited,
        checked: BTreeSet::new(),
    };
    c3.expect(
        g.clone(),
        "/v1/instances",
        "/v1/instances",
        admin,
        None,
        StatusCode::OK,
    )
    .await;
    let spent = c3
        .expect(
            g.clone(),
            "/v1/instances",
            "/v1/instances",
            admin,
            None,
            StatusCode::TOO_MANY_REQUESTS,
        )
        .await;
    assert_eq!(spent["status"], 429);
    c.checked.extend(c3.checked);
    limited.stop().await;

    // Every documented operation had its success response checked.
    for ((method, path), op) in doc.operations() {
        let ok: u16 = op["responses"]
            .as_object()
            .unwrap()
            .keys()
            .find(|s| s.starts_with('2'))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            c.checked.contains(&(method.clone(), path.clone(), ok)),
            "{method} {path} {ok} was not checked against its schema"
        );
    }
    let problems: BTreeSet<u16> = c
        .checked
        .iter()
        .map(|k| k.2)
        .filter(|s| *s >= 400)
        .collect();
    assert_eq!(
        problems,
        BTreeSet::from([400, 401, 403, 404, 409, 422, 429, 503])
    );
    f.server.stop().await;
}

/// Creates an acme workload over `instances` for the first five minutes of the common
/// harness's data and returns its id.
async fn create_workload_over(server: &Live, instances: &[&str]) -> String {
    let r = server
        .call(
            Method::POST,
            "/v1/workloads",
            Some(&token("acme")),
            Some(&json!({
                "label": "harness run",
                "instance_ids": instances,
                "from": T0,
                "to": T0 + B,
                "functional_unit": "run",
                "functional_units": 1,
            })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------------
// Odd requests: whatever the server answers is documented

/// One odd request: what is odd, the path with its query, the token, the body with its
/// content type.
type OddCase = (
    String,
    String,
    Option<String>,
    Option<(Option<&'static str>, String)>,
);

/// Query values that are wrong in most of the ways a caller can be wrong.
const ODD_VALUES: [&str; 18] = [
    "",
    "0",
    "-1",
    "1e3",
    "99999999999999999999",
    "2026-13-01T00:00:00Z",
    "2023-07-08T06:00:00%2B02:00",
    "1688796000000",
    "raw",
    "7m",
    "open",
    "bogus",
    "1,2,,3",
    "0.5",
    "NaN",
    "%00",
    "%C3%BC",
    "%27%20OR%201%3D1%20--",
];

/// For each documented operation, requests with one odd part each — a query value, a path
/// segment, a token, a body — on top of a valid baseline: every answer must have a status the
/// operation documents, its content type, and a body valid under that response's schema.
#[tokio::test]
async fn every_answer_to_odd_requests_is_documented() {
    let f = fixture().await;
    let doc = Doc::fetch(&f.server).await;
    let admin = token("acme");
    let open = f
        .server
        .call(
            Method::POST,
            "/v1/workloads",
            Some(&admin),
            Some(&json!({
                "label": "fuzzed", "instance_ids": ["i-ca"], "from": f.from,
                "functional_unit": "run", "functional_units": 1,
            })),
        )
        .await;
    assert_eq!(open.status, StatusCode::CREATED);
    let workload = open.body["id"].as_str().unwrap().to_owned();
    let baseline = |name: &str| -> Option<String> {
        match name {
            "from" => Some(f.from.to_string()),
            "to" => Some(f.to.to_string()),
            "step" => Some("5m".into()),
            "window_hours" => Some("6".into()),
            "factor" => Some("1.5".into()),
            "basis" => Some("actual".into()),
            "limit" => Some("2".into()),
            "status" => Some("all".into()),
            _ => None,
        }
    };
    let real_id = |name: &str| match name {
        "tenant" => "acme".to_owned(),
        _ => workload.clone(),
    };
    let expired = wattprint_query_api::mint_token_at(
        &auth(),
        &wattprint_core::TenantId::from("acme"),
        SystemTime::now() - Duration::from_secs(7200),
        Duration::from_secs(600),
    )
    .unwrap();
    let tokens: Vec<(&str, Option<String>)> = vec![
        ("admin", Some(admin.clone())),
        ("reader", Some(role_token(Role::Reader, "acme"))),
        ("operator", Some(role_token(Role::Operator, "ops"))),
        ("other tenant", Some(token("globex"))),
        ("expired", Some(expired)),
        ("garbage", Some("not.a.jwt".into())),
        ("none", None),
    ];
    let mut failures = Vec::new();
    let mut sent = 0usize;
    for ((method, template), op) in doc.operations() {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let params: Vec<(String, String)> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["in"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let is_operator = template.starts_with("/v1/operator");
        let good_token = if is_operator {
            role_token(Role::Operator, "ops")
        } else {
            admin.clone()
        };
        let mut cases: Vec<OddCase> = Vec::new();
        let build = |path_odd: Option<(&str, &str)>, query_odd: Option<(&str, &str)>| {
            let mut path = template.clone();
            for (name, at) in &params {
                if at == "path" {
                    let v = match path_odd {
                        Some((n, v)) if n == name => v.to_owned(),
                        _ => real_id(name),
                    };
                    path = path.replace(&format!("{{{name}}}"), &v);
                }
            }
            let query: Vec<String> = params
                .iter()
                .filter(|(_, at)| at == "query")
                .filter_map(|(name, _)| match query_odd {
                    Some((n, v)) if n == name => Some(format!("{name}={v}")),
                    _ => baseline(name).map(|v| format!("{name}={v}")),
                })
                .collect();
            if query.is_empty() {
                path
            } else {
                format!("{path}?{}", query.join("&"))
            }
        };
        let valid_body = match (method.as_str(), template.as_str()) {
            ("POST", "/v1/workloads") => Some(json!({
                "label": "fuzz", "instance_ids": ["i-ca"], "from": f.from, "to": f.to,
                "functional_unit": "run", "functional_units": 1,
            })),
            ("PUT", _) => Some(json!({"labels": {"team": "ml"}})),
            ("POST", _) => Some(json!({"end": f.to})),
            _ => None,
        };
        let json_body = |v: &Value| Some((Some("application/json"), v.to_string()));
        let base_body = valid_body.as_ref().and_then(json_body);
        cases.push((
            "baseline".into(),
            build(None, None),
            Some(good_token.clone()),
            base_body.clone(),
        ));
        for (name, at) in &params {
            let values: Vec<String> = if at == "path" {
                ["nope", "%20", "%C3%BC", "a%2Fb", &"x".repeat(300)]
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            } else {
                ODD_VALUES.iter().map(|s| s.to_string()).collect()
            };
            for v in values {
                let (po, qo) = if at == "path" {
                    (Some((name.as_str(), v.as_str())), None)
                } else {
                    (None, Some((name.as_str(), v.as_str())))
                };
                cases.push((
                    format!("{name}={v}"),
                    build(po, qo),
                    Some(good_token.clone()),
                    base_body.clone(),
                ));
            }
            if at == "query" {
                // Without it.
                let path = build(None, None);
                let without: Vec<&str> = path
                    .split(['?', '&'])
                    .filter(|kv| !kv.starts_with(&format!("{name}=")))
                    .collect();
                let path = match without.split_first() {
                    Some((p, rest)) if !rest.is_empty() => format!("{p}?{}", rest.join("&")),
                    Some((p, _)) => p.to_string(),
                    None => path,
                };
                cases.push((
                    format!("no {name}"),
                    path,
                    Some(good_token.clone()),
                    base_body.clone(),
                ));
            }
        }
        for (what, t) in &tokens {
            cases.push((
                format!("token {what}"),
                build(None, None),
                t.clone(),
                base_body.clone(),
            ));
        }
        if let Some(valid) = &valid_body {
            let mut unknown = valid.clone();
            unknown["unknown_field"] = json!(1);
            let mut wrong = valid.clone();
            if let Some(obj) = wrong.as_object_mut() {
                for v in obj.values_mut() {
                    *v = json!([true]);
                }
            }
            for (what, body) in [
                ("{}", json_body(&json!({}))),
                ("[]", json_body(&json!([]))),
                ("null", json_body(&Value::Null)),
                ("string", json_body(&json!("x"))),
                ("unknown field", json_body(&unknown)),
                ("wrong types", json_body(&wrong)),
                (
                    "truncated",
                    Some((Some("application/json"), "{\"label\":".into())),
                ),
                (
                    "empty json",
                    Some((Some("application/json"), String::new())),
                ),
                ("text/plain", Some((Some("text/plain"), valid.to_string()))),
                ("no content type", Some((None, valid.to_string()))),
                ("no body", None),
            ] {
                cases.push((
                    format!("body {what}"),
                    build(None, None),
                    Some(good_token.clone()),
                    body,
                ));
            }
        }
        for (what, path, bearer, body) in cases {
            sent += 1;
            let r = f
                .server
                .send(m.clone(), &path, bearer.as_deref(), body)
                .await;
            let key = r.status.as_str().to_owned();
            let Some(documented) = op["responses"].get(&key) else {
                failures.push(format!(
                    "{method} {path} ({what}): undocumented {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.bytes)
                ));
                continue;
            };
            let documented = doc.resolve(documented);
            let Some((ctype, media)) = documented["content"]
                .as_object()
                .and_then(|c| c.iter().next())
            else {
                continue;
            };
            if r.content_type() != ctype {
                failures.push(format!(
                    "{method} {path} ({what}): {} as {:?}, documented {ctype}",
                    r.status,
                    r.content_type()
                ));
                continue;
            }
            if template == "/openapi.json" {
                continue;
            }
            let problems = doc.problems(&media["schema"], &r.body);
            if !problems.is_empty() {
                failures.push(format!(
                    "{method} {path} ({what}): {} body: {problems:?}",
                    r.status
                ));
            }
        }
    }
    assert!(sent > 400, "{sent} requests");
    eprintln!(
        "odd requests: {sent} sent, {} answered off the document",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {sent} answers are not as documented:\n{}",
        failures.len(),
        failures.join("\n")
    );
    f.server.stop().await;
}

/// Every numeric bound the document states on a query parameter is the server's: just inside
/// is answered, just outside is a 400 problem. The query-only operations are called with each
/// bounded parameter alone, as their caller's role (readers read tenants' data, operators the
/// operator routes).
#[tokio::test]
async fn every_stated_parameter_bound_is_the_servers() {
    let f = fixture().await;
    let doc = Doc::fetch(&f.server).await;
    let reader = role_token(Role::Reader, "acme");
    let operator = role_token(Role::Operator, "ops");
    let mut checked = Vec::new();
    for ((method, path), op) in doc.operations() {
        if method != "GET" || path.contains('{') {
            continue;
        }
        let bearer = if path.starts_with("/v1/operator") {
            &operator
        } else {
            &reader
        };
        for param in op["parameters"].as_array().into_iter().flatten() {
            let param = doc.resolve(param);
            let schema = doc.resolve(&param["schema"]);
            let name = param["name"].as_str().unwrap();
            let mut cases = Vec::new();
            if let Some(min) = schema["minimum"].as_i64() {
                cases.extend([(min, true), (min - 1, false)]);
            }
            if let Some(max) = schema["maximum"].as_i64() {
                cases.extend([(max, true), (max + 1, false)]);
            }
            for (value, inside) in cases {
                let uri = format!("{path}?{name}={value}");
                let a = f.server.call(Method::GET, &uri, Some(bearer), None).await;
                if inside {
                    assert!(a.status.is_success(), "{uri}: {} {}", a.status, a.body);
                } else {
                    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}: {}", a.body);
                    assert_eq!(a.content_type(), "application/problem+json", "{uri}");
                    assert_eq!(a.body["status"], 400, "{uri}");
                    assert!(a.body["detail"].as_str().unwrap().contains(name), "{uri}");
                }
                checked.push(uri);
            }
        }
    }
    // The page limits of the instance and workload lists, at least.
    for path in ["/v1/instances", "/v1/workloads"] {
        for value in [0, 1, 1000, 1001] {
            let uri = format!("{path}?limit={value}");
            assert!(checked.contains(&uri), "{uri} not checked: {checked:?}");
        }
    }
    f.server.stop().await;
}
