//! Proxy servers (SOCKS5, HTTP) and the PROXY protocol, control plane only: nexd's flags,
//! `nexctl nexd proxy add/remove/list` and `status`, the state file across a restart, and
//! bad input. The servers' data path has tests of its own; here a listener is "up" when a
//! TCP connect to it succeeds.

use nexd_e2e::free_port;
use nexd_e2e::nexd::{config, run_to_exit, Keypair, PeerSpec, Scratch};
use nexd_e2e::pair::Pair;
use nexd_e2e::traffic::local;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "nexctl failed: {}{}", r.1, r.2);
    r.1
}

/// Asserts nexctl failed with `code` and one stderr line mentioning `needle`.
fn fails(r: (i32, String, String), code: i32, needle: &str, what: &str) {
    let (c, out, err) = r;
    assert_eq!(c, code, "{what}: {out}{err}");
    assert!(err.contains(needle), "{what}: {err:?} lacks {needle:?}");
    assert_eq!(err.trim().lines().count(), 1, "{what}: {err:?}");
}

fn listening(port: u16) -> bool {
    TcpStream::connect(local(port)).is_ok()
}

/// `proxy list` lines that are proxy servers (they start with the kind).
fn servers(list: &str) -> Vec<String> {
    list.lines()
        .filter(|l| l.starts_with("socks5 ") || l.starts_with("http-proxy "))
        .map(str::to_string)
        .collect()
}

fn metrics(port: u16) -> String {
    let mut s = TcpStream::connect(local(port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp
}

#[test]
fn flag_servers_listen_and_show_in_list_status_and_metrics() {
    let (s, h, m) = (free_port(), free_port(), free_port());
    let mut p = Pair::new(true);
    p.a.start(
        &p.scratch,
        &[
            "--socks5".into(),
            s.to_string(),
            "--http-proxy".into(),
            format!("127.0.0.1:{h}"),
            "--proxy-allow-dest".into(),
            "100.100.0.0/24,[fd00::2]:80-90".into(),
            "--socks5-resolve".into(),
            "none".into(),
            "--metrics-listen".into(),
            format!("127.0.0.1:{m}"),
        ],
    );
    // A bare port listens on loopback.
    assert!(listening(s) && listening(h));
    let allow = "allow-dest=100.100.0.0/24,[fd00::2]:80-90";
    assert_eq!(
        servers(&ok(p.a.nexctl(&["nexd", "proxy", "list"]))),
        [
            format!("socks5 127.0.0.1:{s} {allow} origin=flag"),
            format!("http-proxy 127.0.0.1:{h} {allow} origin=flag"),
        ]
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(p.a.nexctl(&["-o", "json", "nexd", "proxy", "list"]))).unwrap();
    assert_eq!(json["rules"], serde_json::json!([]));
    assert_eq!(
        json["servers"][0],
        serde_json::json!({"kind": "socks5", "listen": format!("127.0.0.1:{s}"),
            "allow_destinations": ["100.100.0.0/24", "[fd00::2]:80-90"], "origin": "flag"})
    );
    assert_eq!(json["servers"][1]["kind"], "http-proxy");

    let status = ok(p.a.nexctl(&["nexd", "status"]));
    assert!(status.contains("servers:     2"), "{status}");
    assert!(
        status.contains(&format!(
            "server:      socks5 127.0.0.1:{s}  active=0 total=0"
        )),
        "{status}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(p.a.nexctl(&["-o", "json", "nexd", "status"]))).unwrap();
    let listed: Vec<String> = json["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| format!("{} {} {}", v["kind"], v["listen"], v["refused_not_allowed"]))
        .collect();
    assert_eq!(
        listed,
        [
            format!("\"socks5\" \"127.0.0.1:{s}\" 0"),
            format!("\"http-proxy\" \"127.0.0.1:{h}\" 0"),
        ]
    );

    let text = metrics(m);
    for want in [
        format!("nexd_server_flows_total{{kind=\"socks5\",listen=\"127.0.0.1:{s}\"}} 0"),
        format!("nexd_server_active_flows{{kind=\"http-proxy\",listen=\"127.0.0.1:{h}\"}} 0"),
        format!("nexd_server_refused_requests_total{{kind=\"socks5\",listen=\"127.0.0.1:{s}\",reason=\"not_allowed\"}} 0"),
    ] {
        assert!(text.contains(&want), "{want} missing:\n{text}");
    }
}

#[test]
fn servers_and_proxy_protocol_rules_added_at_runtime_survive_a_restart() {
    let (s, h) = (free_port(), free_port());
    let mut p = Pair::new(true);
    p.a.start(&p.scratch, &[]);
    assert!(!listening(s), "port {s} open before the server exists");

    let out = ok(p.a.nexctl(&[
        "nexd",
        "proxy",
        "add",
        "--socks5",
        &s.to_string(),
        "--allow-dest",
        "100.100.0.2:80",
        "--allow-dest",
        "100.100.0.0/24",
    ]));
    let socks = format!("socks5 127.0.0.1:{s} allow-dest=100.100.0.2:80,100.100.0.0/24");
    assert_eq!(out.trim(), format!("added {socks}"));
    // No waiting: when nexctl returns, the server accepts.
    assert!(listening(s));
    let out = ok(p.a.nexctl(&[
        "-o",
        "json",
        "nexd",
        "proxy",
        "add",
        "--http-proxy",
        &format!("127.0.0.1:{h}"),
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"result": "added", "kind": "http-proxy",
            "listen": format!("127.0.0.1:{h}"), "allow_destinations": []})
    );
    assert!(listening(h));
    let rule = "tcp:8443:127.0.0.1:8080";
    let out = ok(p.a.nexctl(&[
        "nexd",
        "proxy",
        "add",
        "--ingress",
        rule,
        "--proxy-protocol",
        "v2",
    ]));
    assert_eq!(
        out.trim(),
        format!("added ingress {rule} proxy-protocol=v2")
    );

    // Twice the same server, or one that is not there: refused, one line, state unchanged.
    fails(
        p.a.nexctl(&[
            "nexd",
            "proxy",
            "add",
            "--socks5",
            &format!("127.0.0.1:{s}"),
        ]),
        1,
        "already exists",
        "duplicate add",
    );
    let unknown = free_port().to_string();
    fails(
        p.a.nexctl(&["nexd", "proxy", "remove", "--http-proxy", &unknown]),
        1,
        "no such proxy server",
        "remove unknown",
    );

    ok(p.a.nexctl(&["nexd", "proxy", "remove", "--http-proxy", &h.to_string()]));
    assert!(!listening(h), "new connections still accepted after remove");
    let list = ok(p.a.nexctl(&["nexd", "proxy", "list"]));
    let want = [
        format!("ingress {rule} proxy-protocol=v2 origin=runtime"),
        format!("{socks} origin=runtime"),
    ];
    assert_eq!(list.lines().collect::<Vec<_>>(), want);

    // Restart with the same state dir, and the socks5 server given as a flag too: it is
    // started once (a second start would fail: the port is taken), the removed one stays
    // removed, the rule keeps its header.
    let status = p.a.proc().terminate(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(!listening(s));
    p.a.nexd = None;
    // As given at runtime, so the flag and the saved server are the same server.
    p.a.start(
        &p.scratch,
        &[
            "--socks5".into(),
            s.to_string(),
            "--proxy-allow-dest".into(),
            "100.100.0.2:80,100.100.0.0/24".into(),
        ],
    );
    assert!(listening(s));
    assert!(!listening(h));
    let list = ok(p.a.nexctl(&["nexd", "proxy", "list"]));
    assert_eq!(list.lines().collect::<Vec<_>>(), want);
    let log = p.a.log();
    assert!(log.contains("servers_restored=1"), "{log}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(p.a.nexctl(&["-o", "json", "nexd", "proxy", "list"]))).unwrap();
    assert_eq!(json["rules"][0]["proxy_protocol"], "v2");

    // Removing it at runtime empties the state: the next start has only what flags give.
    ok(p.a.nexctl(&["nexd", "proxy", "remove", "--socks5", &s.to_string()]));
    ok(p.a.nexctl(&["nexd", "proxy", "remove", "--ingress", rule]));
    assert!(!listening(s));
    p.a.proc().terminate(Duration::from_secs(15));
    p.a.nexd = None;
    p.a.start(&p.scratch, &[]);
    assert_eq!(ok(p.a.nexctl(&["nexd", "proxy", "list"])), "");
}

#[test]
fn bad_server_input_is_refused_in_one_line_and_the_daemon_keeps_going() {
    let s = free_port();
    let mut p = Pair::new(true);
    p.a.start(&p.scratch, &["--socks5".into(), s.to_string()]);
    let busy_port = free_port();
    let _busy = TcpListener::bind(local(busy_port)).unwrap();
    let busy = busy_port.to_string();
    let long = "1".repeat(5000);
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["--socks5", "0"], 65, "invalid listen address \"0\""),
        (
            vec!["--http-proxy", "localhost:3128"],
            65,
            "\"localhost:3128\"",
        ),
        (vec!["--socks5", &long], 65, "invalid listen address"),
        (
            vec!["--socks5", "1080", "--allow-dest", "100.100.0.0/33"],
            65,
            "invalid destination \"100.100.0.0/33\"",
        ),
        (
            vec!["--socks5", "1080", "--allow-dest", "100.100.0.2:0"],
            65,
            "\"100.100.0.2:0\"",
        ),
        (
            vec![
                "--egress",
                "tcp:1:100.100.0.2:1",
                "--allow-dest",
                "100.100.0.0/24",
            ],
            64,
            "--allow-dest applies",
        ),
        (
            vec!["--socks5", "1080", "--allow-peer", "100.100.0.2"],
            64,
            "--allow-peer applies",
        ),
        (
            vec!["--egress", "tcp:1:100.100.0.2:1", "--proxy-protocol", "v1"],
            64,
            "TCP --ingress rules only",
        ),
        (
            vec!["--ingress", "udp:53:127.0.0.1:53", "--proxy-protocol", "v2"],
            64,
            "TCP --ingress rules only",
        ),
        (
            vec!["--ingress", "tcp:1:127.0.0.1:1", "--proxy-protocol", "v3"],
            65,
            "\"v3\"",
        ),
        (
            vec!["--socks5", "1080", "--http-proxy", "3128"],
            64,
            "cannot be used",
        ),
        (vec!["--socks5", &busy], 1, "already in use"),
    ];
    for (args, code, needle) in cases {
        let mut argv = vec!["nexd", "proxy", "add"];
        argv.extend(&args);
        let what: String = args.join(" ").chars().take(80).collect();
        fails(p.a.nexctl(&argv), code, needle, &what);
    }
    // Still serving, with nothing else added.
    assert!(listening(s));
    assert_eq!(
        servers(&ok(p.a.nexctl(&["nexd", "proxy", "list"]))),
        [format!("socks5 127.0.0.1:{s} origin=flag")]
    );
    assert_eq!(
        ok(p.a.nexctl(&["nexd", "proxy", "list"])).lines().count(),
        1
    );
}

/// A config nexd accepts, with one peer at 100.100.0.2.
fn valid_config(scratch: &Scratch) -> String {
    let (k, peer) = (Keypair::generate(), Keypair::generate());
    let text = config(
        &k.private,
        "100.100.0.1/32",
        free_port(),
        &[PeerSpec {
            public: &peer.public,
            allowed_ips: "100.100.0.2/32",
            endpoint: Some("127.0.0.1:9".into()),
        }],
    );
    scratch.write("ok.conf", &text).display().to_string()
}

/// Runs `nexd proxy --config <valid> ARGS`: exit `code` at once, one stderr line with `want`.
fn nexd_fails(scratch: &Scratch, args: &[&str], code: i32, want: &[&str]) {
    let c = valid_config(scratch);
    let mut argv = vec!["proxy", "--config", &c];
    argv.extend(args);
    let (got, stderr) = run_to_exit(&argv, Duration::from_secs(10));
    assert_eq!(got, Some(code), "nexd {args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "nexd {args:?}: {stderr}");
    for w in want {
        assert!(stderr.contains(w), "nexd {args:?}: {stderr:?} lacks {w:?}");
    }
}

#[test]
fn bad_server_flags_exit_64_with_one_line() {
    let s = Scratch::new();
    let port = free_port().to_string();
    let egress = format!("tcp:{}:100.100.0.2:80", free_port());
    for (args, want) in [
        (vec!["--socks5", "0"], vec!["--socks5", "\"0\""]),
        (
            vec!["--http-proxy", "127.0.0.1:99999"],
            vec!["--http-proxy", "\"127.0.0.1:99999\""],
        ),
        (
            vec!["--socks5-resolve", "maybe"],
            vec!["--socks5-resolve", "maybe"],
        ),
        (
            vec![
                "--proxy-protocol",
                "v3",
                "--ingress",
                "tcp:443:127.0.0.1:8080",
            ],
            vec!["--proxy-protocol", "\"v3\""],
        ),
        (
            vec!["--proxy-protocol", "v1", "--egress", &egress],
            vec!["--proxy-protocol", "TCP --ingress"],
        ),
        (
            vec!["--proxy-protocol", "v1", "--ingress", "udp:53:127.0.0.1:53"],
            vec!["--proxy-protocol", "TCP --ingress"],
        ),
        (
            vec!["--proxy-allow-dest", "100.100.0.0/24"],
            vec!["--proxy-allow-dest", "none is given"],
        ),
        (
            vec!["--socks5", &port, "--proxy-allow-dest", "nowhere"],
            vec!["--proxy-allow-dest", "\"nowhere\""],
        ),
        (
            vec!["--socks5", &port, "--http-proxy", &port],
            vec!["--http-proxy", "already given"],
        ),
    ] {
        nexd_fails(&s, &args, 64, &want);
    }
}

#[test]
fn an_auth_file_others_may_read_or_none_at_all_stops_nexd_in_one_line() {
    let s = Scratch::new();
    let port = free_port().to_string();
    let auth = s.write("socks.auth", "alice:secret\n");
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = auth.display().to_string();
    nexd_fails(
        &s,
        &["--socks5", &port, "--socks5-auth-file", &path],
        78,
        &["--socks5-auth-file", &path],
    );
    let missing = s.path().join("missing.auth").display().to_string();
    nexd_fails(
        &s,
        &["--socks5", &port, "--socks5-auth-file", &missing],
        66,
        &["--socks5-auth-file", &missing],
    );
}

/// `bad_requests` of the server listening on `listen`, from `status -o json`.
fn bad_requests(p: &Pair, listen: &str) -> Option<u64> {
    let st: serde_json::Value =
        serde_json::from_str(&ok(p.a.nexctl(&["-o", "json", "nexd", "status"]))).ok()?;
    st["servers"]
        .as_array()?
        .iter()
        .find(|s| s["listen"] == listen)?["bad_requests"]
        .as_u64()
}

#[test]
fn clients_that_never_finish_their_request_are_closed_after_the_handshake_deadline() {
    let (s, h) = (free_port(), free_port());
    let mut p = Pair::new(true);
    p.a.start(
        &p.scratch,
        &[
            "--socks5".into(),
            s.to_string(),
            "--http-proxy".into(),
            h.to_string(),
        ],
    );
    let started = std::time::Instant::now();
    // SOCKS5: a greeting and no request; HTTP: half a request head.
    let mut socks = TcpStream::connect(local(s)).unwrap();
    socks.write_all(&[5, 1, 0]).unwrap();
    let mut http = TcpStream::connect(local(h)).unwrap();
    http.write_all(b"CONNECT 100.100.0.2:80 HTTP/1.1\r\n")
        .unwrap();
    for (name, c) in [("socks5", &mut socks), ("http", &mut http)] {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut got = Vec::new();
        // The server answers what it can, then closes the connection.
        let end = c.read_to_end(&mut got);
        assert!(end.is_ok(), "{name}: not closed within 30 s: {end:?}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(9),
            "{name}: closed after {took:?}, before the 10 s deadline"
        );
        if name == "http" {
            let text = String::from_utf8_lossy(&got);
            assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
        } else {
            assert_eq!(got, [5, 0], "only the method choice");
        }
    }
    for listen in [format!("127.0.0.1:{s}"), format!("127.0.0.1:{h}")] {
        assert!(
            nexd_e2e::wait_until(Duration::from_secs(10), || bad_requests(&p, &listen)
                == Some(1)),
            "{listen}: bad_requests {:?}",
            bad_requests(&p, &listen)
        );
    }
}
