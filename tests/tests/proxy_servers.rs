//! SOCKS5 and HTTP proxy servers into the tunnel, and PROXY protocol headers on ingress
//! (issue 14), end to end: nexd runs as nobody in namespace A with tunnel address
//! 100.100.0.1, a wireguard-go peer in namespace B has 100.100.0.2. Real clients (curl,
//! psql, Python, testkit) run in namespace A against nexd's servers on 127.0.0.1; real
//! servers run in namespace B behind the tunnel (some worlds add IPv6 tunnel addresses,
//! fd00::1 and fd00::2). Every transfer is checked byte for byte, every refusal by its
//! reply byte or status code and its counter. Needs root (as in .ci/run); elsewhere each
//! test says SKIPPED.

use nexd_e2e::netns::Background;
use nexd_e2e::nexd::{config, run_to_exit_as, workspace_bin, Keypair, PeerSpec, Scratch};
use nexd_e2e::postgres::{md5_hex, Postgres};
use nexd_e2e::traffic::{payload, sha256};
use nexd_e2e::wait_until;
use nexd_e2e::wg_world::{Setup, WgWorld, NEXD_ADDR, NEXD_ADDR6, PEER_ADDR, PEER_ADDR6};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

/// nexd's SOCKS5 server (inside namespace A, so a fixed port is free).
const SOCKS: &str = "127.0.0.1:1080";
/// nexd's HTTP proxy server.
const HTTP_PROXY: &str = "127.0.0.1:3128";
/// The HTTP server behind the tunnel, on the peer's tunnel address.
const WEB_PORT: u16 = 8000;
/// A port nothing listens on behind the tunnel.
const CLOSED_PORT: u16 = 9;
/// Generous: the CI machine is busy.
const DEADLINE: Duration = Duration::from_secs(30);

fn world(test: &str, rules: &[&str]) -> Option<WgWorld> {
    let rules: Vec<String> = rules.iter().map(|s| s.to_string()).collect();
    WgWorld::start(test, &rules, &format!("{NEXD_ADDR}/32"))
}

fn testkit() -> String {
    workspace_bin("testkit").display().to_string()
}

fn web_url(host: &str, path: &str) -> String {
    format!("http://{host}:{WEB_PORT}{path}")
}

/// `testkit http-serve` in namespace B (on the peer's tunnel address unless told), serving
/// `len` pseudo-random bytes for any path and logging the request heads it receives.
struct Web {
    _server: Background,
    body: Vec<u8>,
    log: std::path::PathBuf,
}

impl Web {
    fn start(w: &WgWorld, len: usize, seed: u64) -> Web {
        Web::start_on(w, &format!("{PEER_ADDR}:{WEB_PORT}"), len, seed)
    }

    fn start_on(w: &WgWorld, bind: &str, len: usize, seed: u64) -> Web {
        let body = payload(len, seed);
        let file = w.scratch.path().join(format!("body-{seed}.bin"));
        std::fs::write(&file, &body).unwrap();
        let log = w.scratch.path().join(format!("requests-{seed}.log"));
        let server = Background::spawn_ready({
            let mut c = w.net.b.command(&testkit());
            c.args([
                "http-serve",
                bind,
                &file.display().to_string(),
                &log.display().to_string(),
            ]);
            c
        })
        .unwrap();
        Web {
            _server: server,
            body,
            log,
        }
    }

    /// The request heads the server received, in order.
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .split("\r\n\r\n")
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// Runs curl in namespace A with `args`, writing the body to a scratch file: (exit code,
/// body, stdout, stderr).
fn curl(w: &WgWorld, args: &[&str]) -> (i32, Vec<u8>, String, String) {
    let out = w.scratch.path().join("curl.out");
    let _ = std::fs::remove_file(&out);
    let o = w
        .net
        .a
        .command("curl")
        .args(["-sS", "--max-time", "60", "-o", &out.display().to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    (
        o.status.code().unwrap_or(-1),
        std::fs::read(&out).unwrap_or_default(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// curl must succeed and fetch exactly `want`.
fn fetch_ok(w: &WgWorld, args: &[&str], want: &[u8]) {
    let mut full = vec!["--fail"];
    full.extend_from_slice(args);
    let (code, body, _, err) = curl(w, &full);
    assert_eq!(
        code,
        0,
        "curl {args:?} failed: {err}\nnexd log:\n{}",
        w.nexd.log()
    );
    assert_eq!(
        (body.len(), sha256(&body)),
        (want.len(), sha256(want)),
        "curl {args:?} fetched other bytes"
    );
}

/// `testkit ARGS` in namespace A; its stdout, or a panic with its error and nexd's log.
fn kit_a(w: &WgWorld, args: &[&str]) -> String {
    let mut full = vec![testkit()];
    full.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    w.net
        .a
        .run(&refs)
        .unwrap_or_else(|e| panic!("testkit {args:?}: {e}\nnexd log:\n{}", w.nexd.log()))
}

/// The first line `testkit socks-request` printed: `reply 0x02 bound …`, `method 0xff`, ….
fn socks_request(w: &WgWorld, dest: &str, auth: Option<&str>) -> String {
    let mut args = vec!["socks-request", SOCKS, "connect", dest];
    args.extend(auth);
    kit_a(w, &args).trim().to_string()
}

/// The SOCKS5 reply code of a CONNECT to `dest` (panics if the exchange did not get as far
/// as a reply).
fn socks_reply(w: &WgWorld, dest: &str) -> u8 {
    let out = socks_request(w, dest, None);
    let code = out
        .strip_prefix("reply 0x")
        .and_then(|r| r.get(..2))
        .and_then(|h| u8::from_str_radix(h, 16).ok());
    code.unwrap_or_else(|| panic!("no SOCKS5 reply for {dest}: {out:?}"))
}

/// `nexctl -o json nexd status`.
fn status(w: &WgWorld) -> Value {
    let (code, out, err) = w.nexctl(&["--output", "json", "nexd", "status"]);
    assert_eq!(code, 0, "nexctl status: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status is not JSON ({e}): {out}"))
}

/// The counters of the proxy server listening on `listen`: its entry in the status
/// document's `servers` (the API's `server_counters`, one object per server with its
/// `kind`, `listen` and the ProxyServerCounters fields).
fn server_counters(w: &WgWorld, listen: &str) -> Value {
    let s = status(w);
    let entries = s["servers"]
        .as_array()
        .unwrap_or_else(|| panic!("status has no servers array: {s:#}"));
    entries
        .iter()
        .find(|e| e["listen"].as_str() == Some(listen))
        .cloned()
        .unwrap_or_else(|| panic!("no servers entry for {listen}: {s:#}"))
}

/// One numeric field of a server's counters.
fn server_count(w: &WgWorld, listen: &str, field: &str) -> u64 {
    let c = server_counters(w, listen);
    c[field]
        .as_u64()
        .unwrap_or_else(|| panic!("server counters have no numeric {field}: {c:#}"))
}

/// A global status counter (`counters.NAME`).
fn global_count(w: &WgWorld, name: &str) -> u64 {
    let s = status(w);
    s["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("status has no counter {name}: {s:#}"))
}

/// Waits for a server's counter to reach `want` (a refusal may be counted just after its
/// client has the answer), then checks that it is exactly `want`.
fn expect_server_count(w: &WgWorld, listen: &str, field: &str, want: u64) {
    let mut now = 0;
    wait_until(DEADLINE, || {
        now = server_count(w, listen, field);
        now >= want
    });
    assert_eq!(now, want, "{listen}: {field}");
}

/// [`expect_server_count`] for a global status counter.
fn expect_global_count(w: &WgWorld, name: &str, want: u64) {
    let mut now = 0;
    wait_until(DEADLINE, || {
        now = global_count(w, name);
        now >= want
    });
    assert_eq!(now, want, "counter {name}");
}

fn udp_flows(w: &WgWorld) -> u64 {
    status(w)["udp_flows"].as_u64().expect("udp_flows")
}

/// A testkit process in a namespace with stdin and stdout piped, for clients that report
/// progress and wait for the test.
struct Interactive {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Interactive {
    fn spawn(mut cmd: Command) -> Interactive {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Interactive {
            child,
            stdin,
            stdout,
        }
    }

    /// The next line on its stdout (empty at EOF).
    fn line(&mut self) -> String {
        let mut l = String::new();
        let _ = self.stdout.read_line(&mut l);
        l.trim_end().to_string()
    }

    /// Lets it go on past its pause.
    fn go_on(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("write to client");
        stdin.flush().expect("flush");
    }

    /// Waits for the exit: (success, the rest of stdout, stderr).
    fn finish(mut self) -> (bool, String, String) {
        drop(self.stdin.take());
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stdout, &mut rest);
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        let ok = self.child.wait().map(|s| s.success()).unwrap_or(false);
        (ok, rest, err)
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A world where both ends also have IPv6 tunnel addresses.
const DUAL_STACK: Setup = Setup {
    etc: &[],
    ipv6: true,
};
/// wireguard-go's AllowedIPs for nexd in such a world.
const DUAL_ALLOWED: &str = "100.100.0.1/32,fd00::1/128";

// ---------------------------------------------------------------------------------------
// 1. SOCKS5 CONNECT with curl.

#[test]
fn socks5_connect_carries_curl_downloads_by_address() {
    // The listen address defaults to 127.0.0.1.
    let Some(w) = world("socks5_curl", &["--socks5", "1080"]) else {
        return;
    };
    let web = Web::start(&w, 4 << 20, 1);
    let url = web_url(PEER_ADDR, "/body.bin");
    // The proxy resolves (curl sends the host as it is: an IPv4 literal here).
    fetch_ok(&w, &["--socks5-hostname", SOCKS, &url], &web.body);
    // curl resolves and sends an IPv4 address (ATYP 1).
    fetch_ok(&w, &["--socks5", SOCKS, &url], &web.body);
    assert_eq!(web.requests().len(), 2, "{:?}", web.requests());
    let c = server_counters(&w, SOCKS);
    assert_eq!(c["flows_total"].as_u64(), Some(2), "{c:#}");
    let to_host = c["bytes_to_host"].as_u64().unwrap_or(0);
    assert!(
        to_host >= 2 * web.body.len() as u64,
        "bytes_to_host {to_host} < two bodies: {c:#}"
    );
    // `--socks5 1080` listens on 127.0.0.1.
    let (code, list, err) = w.nexctl(&["nexd", "proxy", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        list.lines()
            .any(|l| l.contains("socks5") && l.contains(SOCKS)),
        "{list}"
    );
}

#[test]
fn proxies_reach_ipv6_tunnel_addresses() {
    let rules = ["--socks5", SOCKS, "--http-proxy", HTTP_PROXY].map(String::from);
    let Some(w) = WgWorld::start_with("proxy_ipv6", &rules, DUAL_ALLOWED, &DUAL_STACK) else {
        return;
    };
    let web = Web::start_on(&w, &format!("[{PEER_ADDR6}]:{WEB_PORT}"), 3 << 20, 11);
    let host = format!("[{PEER_ADDR6}]");
    // SOCKS5 with an IPv6 address (ATYP 4), from curl and from testkit.
    fetch_ok(
        &w,
        &["--socks5", SOCKS, &web_url(&host, "/socks-curl.bin")],
        &web.body,
    );
    let out = kit_a(
        &w,
        &[
            "socks-get",
            SOCKS,
            &format!("{host}:{WEB_PORT}"),
            "/socks-kit.bin",
            "now",
        ],
    );
    assert_eq!(
        out.trim(),
        format!("body {} {}", web.body.len(), sha256(&web.body))
    );
    // HTTP: plain forwarding and CONNECT to a bracketed IPv6 authority.
    let proxy = format!("http://{HTTP_PROXY}");
    fetch_ok(
        &w,
        &["--proxy", &proxy, &web_url(&host, "/forwarded.bin")],
        &web.body,
    );
    fetch_ok(
        &w,
        &["-p", "--proxy", &proxy, &web_url(&host, "/tunneled.bin")],
        &web.body,
    );
    let heads = web.requests();
    let lines: Vec<&str> = heads.iter().filter_map(|h| h.lines().next()).collect();
    assert_eq!(
        lines,
        [
            "GET /socks-curl.bin HTTP/1.1",
            "GET /socks-kit.bin HTTP/1.1",
            "GET /forwarded.bin HTTP/1.1",
            "GET /tunneled.bin HTTP/1.1"
        ],
        "{heads:?}"
    );
    assert!(
        heads[2]
            .lines()
            .any(|l| l.to_ascii_lowercase() == format!("host: {host}:{WEB_PORT}")),
        "{heads:?}"
    );
    // nexd's own IPv6 address and one no peer covers are refused; a closed port is refused
    // by the peer.
    let refused0 = server_count(&w, SOCKS, "refused_not_allowed");
    assert_eq!(socks_reply(&w, &format!("[{NEXD_ADDR6}]:9000")), 0x02);
    assert_eq!(socks_reply(&w, "[fd00::3]:9000"), 0x02);
    expect_server_count(&w, SOCKS, "refused_not_allowed", refused0 + 2);
    assert_eq!(
        socks_reply(&w, &format!("[{PEER_ADDR6}]:{CLOSED_PORT}")),
        0x05
    );
}

// ---------------------------------------------------------------------------------------
// 2. Domain names.

/// Namespace A's own hosts file and resolver: `peer.nexd-e2e.test` is the peer's tunnel
/// address, and DNS goes to A's loopback, where nothing answers (no query leaves).
const HOSTS: &str = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n\
                     100.100.0.2 peer.nexd-e2e.test\n";
const RESOLV: &str = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n";
const PEER_NAME: &str = "peer.nexd-e2e.test";

#[test]
fn socks5_resolves_names_with_the_host_resolver() {
    let rules = ["--socks5".to_string(), SOCKS.to_string()];
    let Some(w) = WgWorld::start_with(
        "socks5_names",
        &rules,
        &format!("{NEXD_ADDR}/32"),
        &Setup {
            etc: &[("hosts", HOSTS), ("resolv.conf", RESOLV)],
            ..Setup::default()
        },
    ) else {
        return;
    };
    let web = Web::start(&w, 3 << 20, 2);
    // testkit always sends the name (ATYP 3): nexd resolves it through its hosts file.
    let dest = format!("{PEER_NAME}:{WEB_PORT}");
    let out = kit_a(&w, &["socks-get", SOCKS, &dest, "/by-name.bin", "now"]);
    assert_eq!(
        out.trim(),
        format!("body {} {}", web.body.len(), sha256(&web.body))
    );
    // curl with proxy-side resolution: the name goes to nexd as it is.
    fetch_ok(
        &w,
        &["--socks5-hostname", SOCKS, &web_url(PEER_NAME, "/curl.bin")],
        &web.body,
    );
    let heads = web.requests();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(heads[0].starts_with("GET /by-name.bin "), "{heads:?}");
    assert!(heads[1].starts_with("GET /curl.bin "), "{heads:?}");

    // `localhost` resolves to loopback: the host network, refused with 0x02 ("connection
    // not allowed by ruleset"), and a server listening there never sees a connection.
    let seen = w.scratch.path().join("local-accepts");
    let _local = Background::spawn_ready({
        let mut c = w.net.a.command(&testkit());
        c.args([
            "count-accepts",
            "127.0.0.1:9000",
            &seen.display().to_string(),
        ]);
        c
    })
    .unwrap();
    let refused_before = server_count(&w, SOCKS, "refused_not_allowed");
    assert_eq!(socks_reply(&w, "localhost:9000"), 0x02);
    expect_server_count(&w, SOCKS, "refused_not_allowed", refused_before + 1);
    // A name nobody knows: host unreachable (0x04), not a success.
    assert_eq!(socks_reply(&w, "no-such-host.nexd-e2e.test:80"), 0x04);
    // The local server works and is reachable directly: it would have counted nexd.
    let probe = kit_a(&w, &["tcp-probe", "127.0.0.1", "127.0.0.1:9000", "5"]);
    assert_eq!(probe.trim(), "connected");
    assert!(wait_until(DEADLINE, || std::fs::read_to_string(&seen)
        .unwrap_or_default()
        .lines()
        .count()
        == 1));
    let accepted = std::fs::read_to_string(&seen).unwrap();
    assert_eq!(accepted.lines().count(), 1, "{accepted}");
}

#[test]
fn socks5_resolve_none_refuses_names_with_0x08() {
    let Some(w) = world(
        "socks5_resolve_none",
        &["--socks5", SOCKS, "--socks5-resolve", "none"],
    ) else {
        return;
    };
    let web = Web::start(&w, 1 << 20, 3);
    let bad_before = server_count(&w, SOCKS, "bad_requests");
    // Any name, even one the host could resolve: "address type not supported".
    assert_eq!(socks_reply(&w, &format!("localhost:{WEB_PORT}")), 0x08);
    assert_eq!(socks_reply(&w, &format!("{PEER_NAME}:{WEB_PORT}")), 0x08);
    // curl with proxy-side resolution of a name fails too.
    let (code, _, _, err) = curl(&w, &["--socks5-hostname", SOCKS, &web_url(PEER_NAME, "/x")]);
    assert_ne!(
        code, 0,
        "curl through a name-refusing SOCKS5 server succeeded"
    );
    eprintln!("curl through a name-refusing server: {}", err.trim());
    expect_server_count(&w, SOCKS, "bad_requests", bad_before + 3);
    // Addresses still work.
    fetch_ok(
        &w,
        &["--socks5", SOCKS, &web_url(PEER_ADDR, "/body.bin")],
        &web.body,
    );
    assert_eq!(web.requests().len(), 1, "{:?}", web.requests());
}

// ---------------------------------------------------------------------------------------
// 3. HTTP proxy: plain forwarding and CONNECT.

#[test]
fn http_proxy_forwards_plain_requests_and_tunnels_connect() {
    let Some(w) = world("http_proxy", &["--http-proxy", HTTP_PROXY]) else {
        return;
    };
    let web = Web::start(&w, 4 << 20, 4);
    let proxy = format!("http://{HTTP_PROXY}");
    // Plain forwarding: curl sends `GET http://100.100.0.2:8000/forwarded.bin` (with
    // `Proxy-Connection` and, given a proxy user, `Proxy-Authorization`).
    fetch_ok(
        &w,
        &[
            "--proxy",
            &proxy,
            "--proxy-user",
            "user:not-for-the-server",
            &web_url(PEER_ADDR, "/forwarded.bin"),
        ],
        &web.body,
    );
    // CONNECT tunnel (-p): the proxy answers 200, then the bytes are the server's.
    let (code, body, out, err) = curl(
        &w,
        &[
            "-p",
            "--proxy",
            &proxy,
            "-w",
            "%{http_connect}",
            &web_url(PEER_ADDR, "/tunneled.bin"),
        ],
    );
    assert_eq!(code, 0, "curl -p: {err}\n{}", w.nexd.log());
    assert_eq!(out.trim(), "200");
    assert_eq!(sha256(&body), sha256(&web.body));
    let heads = web.requests();
    assert_eq!(heads.len(), 2, "{heads:?}");
    // nexd rewrote the forwarded request to origin form and asked for one request only.
    let forwarded: Vec<&str> = heads[0].lines().collect();
    assert_eq!(forwarded[0], "GET /forwarded.bin HTTP/1.1", "{heads:?}");
    assert!(
        forwarded
            .iter()
            .any(|l| l.to_ascii_lowercase().replace(' ', "") == "connection:close"),
        "no Connection: close in the forwarded request: {heads:?}"
    );
    assert!(
        forwarded
            .iter()
            .any(|l| l.to_ascii_lowercase() == format!("host: {PEER_ADDR}:{WEB_PORT}")),
        "{heads:?}"
    );
    // Headers meant for the proxy stay with the proxy (hop-by-hop; credentials).
    assert!(
        !forwarded
            .iter()
            .any(|l| l.to_ascii_lowercase().starts_with("proxy-")),
        "proxy headers passed on to the server: {heads:?}"
    );
    // Through the tunnel the server sees curl's own request.
    assert!(
        heads[1].starts_with("GET /tunneled.bin HTTP/1.1"),
        "{heads:?}"
    );
    let c = server_counters(&w, HTTP_PROXY);
    assert_eq!(c["flows_total"].as_u64(), Some(2), "{c:#}");
}

// ---------------------------------------------------------------------------------------
// 4. psql through SOCKS5.

#[test]
fn psql_reaches_postgresql_through_socks5() {
    let Some(w) = world("socks5_psql", &["--socks5", SOCKS]) else {
        return;
    };
    let _pg = Postgres::start(&w.net.b).unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
    // psql has no SOCKS support: a local forwarder does the CONNECT for each connection.
    let _fwd = Background::spawn_ready({
        let mut c = w.net.a.command(&testkit());
        c.args([
            "socks-forward",
            "127.0.0.1:15432",
            SOCKS,
            &format!("{PEER_ADDR}:5432"),
        ]);
        c
    })
    .unwrap();
    let psql = |sql: &str| nexd_e2e::postgres::psql(&w.net.a, 15432, sql);
    // PostgreSQL needs a moment to start; poll through the tunnel.
    if let Err(last) = nexd_e2e::postgres::wait_ready(&w.net.a, 15432, Duration::from_secs(60)) {
        panic!("psql never reached PostgreSQL: {last}\n{}", w.nexd.log());
    }
    let expected: String = (1..=100_000)
        .map(|i: u32| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let rows = psql("select string_agg(i::text, ',' order by i) from generate_series(1, 100000) i")
        .unwrap();
    assert_eq!(rows.trim_end_matches('\n').len(), expected.len());
    assert_eq!(
        sha256(rows.trim_end_matches('\n').as_bytes()),
        sha256(expected.as_bytes())
    );
    let digest =
        psql("select md5(string_agg(i::text, ',' order by i)) from generate_series(1, 100000) i")
            .unwrap();
    assert_eq!(digest.trim(), md5_hex(expected.as_bytes()));
    assert!(server_count(&w, SOCKS, "flows_total") >= 3);
}

// ---------------------------------------------------------------------------------------
// 5. UDP ASSOCIATE.

/// A SOCKS5 UDP client (RFC 1928 §7): no authentication, UDP ASSOCIATE naming its own UDP
/// address, then COUNT datagrams of SIZE bytes to DST through the relay, each retried until
/// its echo comes back; every reply must come from the relay, carry a header naming DST and
/// the payload sent. Prints `relayed COUNT retries R sha SHA`, waits for a line on stdin,
/// closes the TCP connection and prints `closed`; waits for another line, sends one more
/// datagram and prints `after-close no-reply` or `after-close reply`.
const UDP_CLIENT: &str = r#"
import hashlib, socket, struct, sys
socks_host, socks_port, dst_ip, dst_port, count, size = sys.argv[1:7]
socks_port, dst_port, count, size = int(socks_port), int(dst_port), int(count), int(size)
def fail(msg):
    print("FAIL " + msg, flush=True)
    sys.exit(1)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", 0))
t = socket.create_connection((socks_host, socks_port), timeout=10)
def recvn(k):
    b = b""
    while len(b) < k:
        c = t.recv(k - len(b))
        if not c:
            fail("SOCKS server closed after %d bytes" % len(b))
        b += c
    return b
t.sendall(b"\x05\x01\x00")
m = recvn(2)
if m != b"\x05\x00":
    fail("method selection %r" % m)
t.sendall(b"\x05\x03\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", u.getsockname()[1]))
ver, rep, rsv, atyp = recvn(4)
if (ver, rep, rsv) != (5, 0, 0):
    fail("UDP ASSOCIATE reply %r" % ((ver, rep, rsv),))
if atyp == 1:
    bnd = socket.inet_ntoa(recvn(4))
elif atyp == 4:
    bnd = socket.inet_ntop(socket.AF_INET6, recvn(16))
else:
    fail("reply ATYP %d" % atyp)
bnd_port = struct.unpack(">H", recvn(2))[0]
if bnd in ("0.0.0.0", "::"):
    bnd = socks_host
relay = (bnd, bnd_port)
hdr = b"\x00\x00\x00\x01" + socket.inet_aton(dst_ip) + struct.pack(">H", dst_port)
u.settimeout(0.5)
sent, got, retries = hashlib.sha256(), hashlib.sha256(), 0
for i in range(count):
    seed = hashlib.sha256(b"datagram %d" % i).digest()
    data = struct.pack(">I", i) + (seed * (size // 32 + 1))[: size - 4]
    sent.update(data)
    echoed = None
    for attempt in range(20):
        u.sendto(hdr + data, relay)
        try:
            while echoed is None:
                reply, frm = u.recvfrom(65536)
                if frm[:2] != relay:
                    fail("reply from %r, not the relay %r" % (frm, relay))
                if reply[:10] != hdr:
                    fail("reply header %r does not name %s:%d" % (reply[:10], dst_ip, dst_port))
                body = reply[10:]
                if body == data:
                    echoed = body
                elif len(body) != size or struct.unpack(">I", body[:4])[0] > i:
                    fail("datagram %d: unexpected reply of %d bytes" % (i, len(body)))
        except socket.timeout:
            retries += 1
            continue
        break
    if echoed is None:
        fail("datagram %d never echoed" % i)
    got.update(echoed)
if sent.digest() != got.digest():
    fail("echo checksum differs")
print("relayed %d retries %d sha %s" % (count, retries, got.hexdigest()), flush=True)
sys.stdin.readline()
t.close()
print("closed", flush=True)
sys.stdin.readline()
u.sendto(hdr + b"late", relay)
u.settimeout(2)
try:
    u.recvfrom(65536)
    print("after-close reply", flush=True)
except (socket.timeout, ConnectionRefusedError):
    print("after-close no-reply", flush=True)
"#;

#[test]
fn socks5_udp_associate_relays_datagrams_until_the_connection_closes() {
    let Some(w) = world("socks5_udp", &["--socks5", SOCKS]) else {
        return;
    };
    if !nexd_e2e::have("python3") {
        panic!("python3 is missing (the CI image has it)");
    }
    let _echo = Background::spawn_ready({
        let mut c = w.net.b.command(&testkit());
        c.args(["udp-echo", &format!("{PEER_ADDR}:7")]);
        c
    })
    .unwrap();
    assert_eq!(udp_flows(&w), 0);
    let (count, size) = (200, 1200);
    let mut client = Interactive::spawn({
        let mut c = w.net.a.command("python3");
        c.args([
            "-c",
            UDP_CLIENT,
            "127.0.0.1",
            "1080",
            PEER_ADDR,
            "7",
            &count.to_string(),
            &size.to_string(),
        ]);
        c
    });
    let line = client.line();
    if !line.starts_with(&format!("relayed {count} ")) {
        let (_, rest, err) = client.finish();
        panic!(
            "UDP client: {line}\n{rest}\n{err}\nnexd log:\n{}",
            w.nexd.log()
        );
    }
    // While the association lasts, nexd holds its flow to the echo server.
    let flows = udp_flows(&w);
    assert!(flows >= 1, "no UDP flow during the association");
    let datagrams = server_count(&w, SOCKS, "datagrams");
    assert!(
        datagrams >= 2 * count,
        "datagrams {datagrams} < {} relayed both ways",
        2 * count
    );
    client.go_on();
    assert_eq!(client.line(), "closed");
    // Closing the TCP connection ends the association and its flows.
    let mut now = flows;
    assert!(
        wait_until(DEADLINE, || {
            now = udp_flows(&w);
            now == 0
        }),
        "udp_flows still {now} after the association's connection closed\n{}",
        w.nexd.log()
    );
    client.go_on();
    assert_eq!(client.line(), "after-close no-reply");
    let (ok, rest, err) = client.finish();
    assert!(ok, "UDP client failed: {rest}\n{err}");
}

// ---------------------------------------------------------------------------------------
// 6. Destinations outside the tunnel, and closed ones inside it.

#[test]
fn proxies_refuse_destinations_outside_the_tunnel_and_report_closed_ports() {
    let Some(w) = world(
        "proxy_refusals",
        &["--socks5", SOCKS, "--http-proxy", HTTP_PROXY],
    ) else {
        return;
    };
    // A real server on every address of namespace A (loopback and the veth, IPv6 and IPv4):
    // reachable directly, so only nexd's refusal keeps the proxies from it.
    let seen = w.scratch.path().join("host-accepts");
    let _host = Background::spawn_ready({
        let mut c = w.net.a.command(&testkit());
        c.args(["count-accepts", "[::]:9000", &seen.display().to_string()]);
        c
    })
    .unwrap();
    let (socks0, http0) = (
        server_count(&w, SOCKS, "refused_not_allowed"),
        server_count(&w, HTTP_PROXY, "refused_not_allowed"),
    );
    let global0 = global_count(&w, "proxy_not_allowed");
    // SOCKS5: loopback (as IPv4, IPv6 and IPv4-mapped IPv6), the host's veth address,
    // nexd's own tunnel address.
    for dest in [
        "127.0.0.1:9000".to_string(),
        "[::1]:9000".to_string(),
        "[::ffff:127.0.0.1]:9000".to_string(),
        format!("{}:9000", w.net.a_addr),
        format!("{NEXD_ADDR}:9000"),
    ] {
        assert_eq!(socks_reply(&w, &dest), 0x02, "SOCKS5 CONNECT {dest}");
    }
    // HTTP: CONNECT and a plain request to loopback.
    let proxy = format!("http://{HTTP_PROXY}");
    let (code, _, out, _) = curl(
        &w,
        &[
            "-p",
            "--proxy",
            &proxy,
            "-w",
            "%{http_connect}",
            "http://127.0.0.1:9000/",
        ],
    );
    assert_ne!(code, 0);
    assert_eq!(out.trim(), "403", "HTTP CONNECT 127.0.0.1:9000");
    let (code, _, out, _) = curl(
        &w,
        &[
            "--proxy",
            &proxy,
            "-w",
            "%{http_code}",
            "http://127.0.0.1:9000/",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "403", "HTTP GET http://127.0.0.1:9000/");
    // Counted exactly, per server and in total.
    expect_server_count(&w, SOCKS, "refused_not_allowed", socks0 + 5);
    expect_server_count(&w, HTTP_PROXY, "refused_not_allowed", http0 + 2);
    expect_global_count(&w, "proxy_not_allowed", global0 + 7);
    // The server never saw any of them, yet it does count a direct connection.
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "");
    let probe = kit_a(&w, &["tcp-probe", "127.0.0.1", "127.0.0.1:9000", "5"]);
    assert_eq!(probe.trim(), "connected");
    assert!(wait_until(DEADLINE, || !std::fs::read_to_string(&seen)
        .unwrap_or_default()
        .is_empty()));
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap().lines().count(),
        1,
        "one direct connection"
    );

    // Inside the tunnel, a port nothing listens on: the peer refuses the connection.
    let closed = format!("{PEER_ADDR}:{CLOSED_PORT}");
    let (sf, hf) = (
        server_count(&w, SOCKS, "connect_failed"),
        server_count(&w, HTTP_PROXY, "connect_failed"),
    );
    assert_eq!(socks_reply(&w, &closed), 0x05, "SOCKS5 CONNECT {closed}");
    // The same port named as an IPv4-mapped IPv6 address is the same tunnel destination.
    let mapped = format!("[::ffff:{PEER_ADDR}]:{CLOSED_PORT}");
    assert_eq!(socks_reply(&w, &mapped), 0x05, "SOCKS5 CONNECT {mapped}");
    let url = format!("http://{closed}/");
    let (_, _, out, _) = curl(
        &w,
        &["-p", "--proxy", &proxy, "-w", "%{http_connect}", &url],
    );
    assert_eq!(out.trim(), "502", "HTTP CONNECT {closed}");
    let (code, _, out, _) = curl(&w, &["--proxy", &proxy, "-w", "%{http_code}", &url]);
    assert_eq!((code, out.trim()), (0, "502"), "HTTP GET {url}");
    expect_server_count(&w, SOCKS, "connect_failed", sf + 2);
    expect_server_count(&w, HTTP_PROXY, "connect_failed", hf + 2);
    // The total is in the refused_flows group.
    let st = status(&w);
    assert_eq!(
        st["counter_groups"]["refused_flows"]["proxy_not_allowed"].as_u64(),
        Some(global0 + 7),
        "{st:#}"
    );
    // None of these were "not allowed".
    expect_server_count(&w, SOCKS, "refused_not_allowed", socks0 + 5);
    expect_server_count(&w, HTTP_PROXY, "refused_not_allowed", http0 + 2);
    expect_global_count(&w, "proxy_not_allowed", global0 + 7);
}

// ---------------------------------------------------------------------------------------
// 7. SOCKS5 username/password.

/// `user:password` lines, owned by nobody (nexd's user) and private to it.
fn auth_file(scratch: &Scratch, mode: u32) -> std::path::PathBuf {
    let p = scratch.path().join("socks5-users");
    std::fs::write(&p, "alice:s3cret\ncarol:other:with:colons\n").unwrap();
    std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

#[test]
fn socks5_username_password_authentication() {
    let users = Scratch::new();
    let file = auth_file(&users, 0o600);
    let Some(w) = world(
        "socks5_auth",
        &[
            "--socks5",
            SOCKS,
            "--socks5-auth-file",
            &file.display().to_string(),
        ],
    ) else {
        return;
    };
    let web = Web::start(&w, 2 << 20, 7);
    let url = web_url(PEER_ADDR, "/body.bin");
    fetch_ok(
        &w,
        &[
            "--socks5-hostname",
            SOCKS,
            "--proxy-user",
            "alice:s3cret",
            &url,
        ],
        &web.body,
    );
    // A password may contain colons: the first one separates.
    let dest = format!("{PEER_ADDR}:{WEB_PORT}");
    assert!(
        socks_request(&w, &dest, Some("carol:other:with:colons")).starts_with("reply 0x00 "),
        "carol was refused"
    );
    let failed0 = server_count(&w, SOCKS, "auth_failed");
    let (code, _, _, err) = curl(
        &w,
        &[
            "--socks5-hostname",
            SOCKS,
            "--proxy-user",
            "alice:wrong",
            &url,
        ],
    );
    assert_ne!(code, 0, "curl with a wrong password succeeded");
    eprintln!("curl, wrong password: {}", err.trim());
    expect_server_count(&w, SOCKS, "auth_failed", failed0 + 1);
    let (code, _, _, err) = curl(&w, &["--socks5-hostname", SOCKS, &url]);
    assert_ne!(code, 0, "curl without credentials succeeded");
    eprintln!("curl, no credentials: {}", err.trim());
    expect_server_count(&w, SOCKS, "auth_failed", failed0 + 2);
    // The bytes of the refusals: no acceptable method (0xff) without credentials, a
    // non-zero RFC 1929 status for a wrong password or user.
    assert_eq!(socks_request(&w, &dest, None), "method 0xff");
    for bad in ["alice:S3cret", "bob:s3cret", "alice:s3cret "] {
        let out = socks_request(&w, &dest, Some(bad));
        assert!(
            out.starts_with("auth 0x") && out != "auth 0x00",
            "{bad}: {out}"
        );
    }
    expect_server_count(&w, SOCKS, "auth_failed", failed0 + 6);
    // Only alice's download reached the server (carol only connected).
    assert_eq!(web.requests().len(), 1, "{:?}", web.requests());

    // A new password takes effect on reload; a file nexd refuses keeps the old one.
    std::fs::write(&file, "alice:n3w\n").unwrap();
    let (code, out, err) = w.nexctl(&["nexd", "reload"]);
    assert_eq!(code, 0, "reload: {out}{err}");
    assert!(socks_request(&w, &dest, Some("alice:n3w")).starts_with("reply 0x00 "));
    assert!(socks_request(&w, &dest, Some("alice:s3cret")).starts_with("auth 0x"));
    std::fs::write(&file, "alice:later\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = w.nexctl(&["nexd", "reload"]);
    assert!(
        format!("{out}{err}").contains("previous credentials stay"),
        "reload with a 0644 file (exit {code}): {out}{err}"
    );
    assert!(socks_request(&w, &dest, Some("alice:n3w")).starts_with("reply 0x00 "));
    assert!(socks_request(&w, &dest, Some("alice:later")).starts_with("auth 0x"));
}

#[test]
fn socks5_auth_file_readable_by_others_is_refused() {
    if !nexd_e2e::is_root() {
        return nexd_e2e::skip("socks5_auth_file_mode", "needs root to run nexd as nobody");
    }
    let scratch = Scratch::new();
    let file = auth_file(&scratch, 0o644);
    let (k, p) = (Keypair::generate(), Keypair::generate());
    let conf = scratch.write(
        "nexd.conf",
        &config(
            &k.private,
            "100.100.0.1/32",
            nexd_e2e::free_port(),
            &[PeerSpec {
                public: &p.public,
                allowed_ips: "100.100.0.2/32",
                endpoint: Some("127.0.0.1:9".into()),
            }],
        ),
    );
    let socks = format!("127.0.0.1:{}", nexd_e2e::free_port());
    let (code, stderr) = run_to_exit_as(
        true,
        &[
            "proxy",
            "--config",
            &conf.display().to_string(),
            "--socks5",
            &socks,
            "--socks5-auth-file",
            &file.display().to_string(),
        ],
        Duration::from_secs(10),
    );
    let code = code.unwrap_or_else(|| panic!("nexd ran with a world-readable auth file: {stderr}"));
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&file.display().to_string()),
        "the error should name the file: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// 8. PROXY protocol on ingress.

/// A source port of the peer's client, fixed inside namespace B.
const CLIENT_PORT: u16 = 24680;

fn proxy_protocol(version: &str) {
    let test = format!("proxy_protocol_{version}");
    let rules = [
        "--ingress",
        "tcp:443:127.0.0.1:8080",
        "--proxy-protocol",
        version,
    ]
    .map(String::from);
    let Some(w) = WgWorld::start_with(&test, &rules, DUAL_ALLOWED, &DUAL_STACK) else {
        return;
    };
    let server = Background::spawn_ready({
        let mut c = w.net.a.command(&testkit());
        c.args(["proxy-proto-server", "127.0.0.1:8080"]);
        c
    })
    .unwrap();
    let n = version.trim_start_matches('v');
    // Over IPv4 (twice, from different ports) and over IPv6 (TCP6 / family 0x21).
    let v4 = |port: u16| format!("{PEER_ADDR}:{port}");
    let v6 = |port: u16| format!("[{PEER_ADDR6}]:{port}");
    for (src, dst, bytes, seed) in [
        (v4(CLIENT_PORT), format!("{NEXD_ADDR}:443"), 2 << 20, 1u64),
        (v4(CLIENT_PORT + 1), format!("{NEXD_ADDR}:443"), 1000, 2),
        (
            v6(CLIENT_PORT + 2),
            format!("[{NEXD_ADDR6}]:443"),
            1 << 20,
            3,
        ),
    ] {
        let out = w
            .net
            .b
            .run(&[
                &testkit(),
                "proxy-proto-client",
                &src,
                &dst,
                &bytes.to_string(),
                &seed.to_string(),
            ])
            .unwrap_or_else(|e| panic!("{e}\nnexd log:\n{}", w.nexd.log()));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                format!("header: proxy=v{n} src={src} dst={dst}").as_str(),
                "ok"
            ],
            "{out}"
        );
    }
    // The same rule in front of a real PROXY protocol consumer, when there is one.
    drop(server);
    haproxy_accepts(&w, version);
}

/// With HAProxy installed, a real PROXY protocol consumer (`accept-proxy`) on the rule's
/// local address must report the peer as the client.
fn haproxy_accepts(w: &WgWorld, version: &str) {
    if !nexd_e2e::have("haproxy") {
        eprintln!("proxy_protocol_{version}: haproxy not installed; its part SKIPPED");
        return;
    }
    let cfg = w.scratch.write(
        "haproxy.cfg",
        "global\n  maxconn 100\ndefaults\n  mode http\n  timeout connect 5s\n  \
         timeout client 30s\n  timeout server 30s\nfrontend fe\n  \
         bind 127.0.0.1:8080 accept-proxy\n  \
         http-request return status 200 content-type text/plain \
         lf-string \"src=%[src]:%[src_port] dst=%[dst]:%[dst_port]\"\n",
    );
    let _haproxy = Background::spawn({
        let mut c = w.net.a.command("haproxy");
        c.args(["-db", "-f", &cfg.display().to_string()]);
        c
    })
    .unwrap();
    let port = CLIENT_PORT + 3;
    let mut got = String::new();
    let answered = wait_until(DEADLINE, || {
        match w.net.b.run(&[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--interface",
            PEER_ADDR,
            "--local-port",
            &port.to_string(),
            &format!("http://{NEXD_ADDR}:443/"),
        ]) {
            Ok(o) => {
                got = o;
                true
            }
            Err(e) => {
                got = e;
                false
            }
        }
    });
    assert!(answered, "haproxy never answered: {got}\n{}", w.nexd.log());
    assert_eq!(
        got.trim(),
        format!("src={PEER_ADDR}:{port} dst={NEXD_ADDR}:443")
    );
}

#[test]
fn proxy_protocol_v1_header_names_the_peer() {
    proxy_protocol("v1");
}

#[test]
fn proxy_protocol_v2_header_names_the_peer() {
    proxy_protocol("v2");
}

// ---------------------------------------------------------------------------------------
// 9. Servers added and removed at runtime.

fn proxy_list(w: &WgWorld) -> String {
    let (code, out, err) = w.nexctl(&["nexd", "proxy", "list"]);
    assert_eq!(code, 0, "nexctl proxy list: {err}");
    out
}

fn lists(list: &str, kind: &str, listen: &str) -> bool {
    list.lines().any(|l| l.contains(kind) && l.contains(listen))
}

#[test]
fn proxy_servers_added_and_removed_at_runtime() {
    let Some(w) = world("proxy_runtime", &[]) else {
        return;
    };
    let web = Web::start(&w, 16 << 20, 9);
    let url = web_url(PEER_ADDR, "/body.bin");
    // Nothing listens yet.
    let (code, _, _, _) = curl(&w, &["--socks5", SOCKS, &url]);
    assert_eq!(
        code, 7,
        "curl should fail to connect before the server is added"
    );

    let (code, _, err) = w.nexctl(&["nexd", "proxy", "add", "--socks5", SOCKS]);
    assert_eq!(code, 0, "nexctl proxy add --socks5: {err}");
    let (code, _, err) = w.nexctl(&["nexd", "proxy", "add", "--http-proxy", HTTP_PROXY]);
    assert_eq!(code, 0, "nexctl proxy add --http-proxy: {err}");
    let list = proxy_list(&w);
    assert!(lists(&list, "socks5", SOCKS), "{list}");
    assert!(lists(&list, "http", HTTP_PROXY), "{list}");
    // Up when add returned.
    fetch_ok(&w, &["--socks5", SOCKS, &url], &web.body);
    fetch_ok(
        &w,
        &["--proxy", &format!("http://{HTTP_PROXY}"), &url],
        &web.body,
    );

    // A download in flight through the SOCKS5 server while it is removed.
    let mut inflight = Interactive::spawn({
        let mut c = w.net.a.command(&testkit());
        c.args([
            "socks-get",
            SOCKS,
            &format!("{PEER_ADDR}:{WEB_PORT}"),
            "/inflight.bin",
            "pause",
        ]);
        c
    });
    let started = inflight.line();
    assert!(
        started.starts_with("started "),
        "in-flight download: {started:?}"
    );
    let (code, _, err) = w.nexctl(&["nexd", "proxy", "remove", "--socks5", SOCKS]);
    assert_eq!(code, 0, "nexctl proxy remove --socks5: {err}");
    let list = proxy_list(&w);
    assert!(!lists(&list, "socks5", SOCKS), "{list}");
    assert!(lists(&list, "http", HTTP_PROXY), "{list}");
    // New connections are refused (the listener is closed)...
    let (mut last, mut attempts) = (0, 0);
    assert!(
        wait_until(DEADLINE, || {
            attempts += 1;
            last = curl(&w, &["--socks5", SOCKS, &url]).0;
            last == 7
        }),
        "curl exit {last}: the removed server still accepts"
    );
    if attempts > 1 {
        eprintln!(
            "note: the removed SOCKS5 server accepted {} connection(s) after remove returned",
            attempts - 1
        );
    }
    // ...while the download started before finishes intact.
    inflight.go_on();
    let (ok, out, err) = inflight.finish();
    assert!(
        ok,
        "in-flight download failed: {err}\nnexd log:\n{}",
        w.nexd.log()
    );
    assert_eq!(
        out.trim(),
        format!("body {} {}", web.body.len(), sha256(&web.body))
    );
    // The other server is untouched.
    fetch_ok(
        &w,
        &["--proxy", &format!("http://{HTTP_PROXY}"), &url],
        &web.body,
    );
    let (code, _, err) = w.nexctl(&["nexd", "proxy", "remove", "--http-proxy", HTTP_PROXY]);
    assert_eq!(code, 0, "nexctl proxy remove --http-proxy: {err}");
    assert!(!lists(&proxy_list(&w), "http", HTTP_PROXY));
    let (code, _, _, _) = curl(&w, &["--proxy", &format!("http://{HTTP_PROXY}"), &url]);
    assert_eq!(code, 7, "the removed HTTP proxy still accepts");
}
