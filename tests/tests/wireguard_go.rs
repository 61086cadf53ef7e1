//! Interop with a real wireguard-go peer in a network namespace. nexd runs as `nobody` in a
//! second namespace; the two are joined by a veth pair. Needs root (as in .ci/run).

use nexd_e2e::netns::{self, Background};
use nexd_e2e::nexd::{workspace_bin, Nexd};
use nexd_e2e::traffic::{payload, sha256};
use nexd_e2e::wait_until;
use nexd_e2e::wg_world::{WgWorld, NEXD_ADDR, PEER_ADDR};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

/// nexd (in `net.a`) peered with wireguard-go (in `net.b`), nexd with `rules`.
fn world(test: &str, rules: &[&str]) -> Option<WgWorld> {
    let rules: Vec<String> = rules.iter().map(|s| s.to_string()).collect();
    WgWorld::start(test, &rules, &format!("{NEXD_ADDR}/32"))
}

fn testkit() -> String {
    workspace_bin("testkit").display().to_string()
}

/// The process runs as nobody: its real uid in /proc is 65534.
fn assert_unprivileged(n: &Nexd) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", n.pid().unwrap())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "nexd is not running as nobody: {uid_line}"
    );
}

#[test]
fn seed_example_1_ingress_serves_a_local_http_server_to_the_peer() {
    let Some(w) = world("ingress_http", &["--ingress", "tcp:443:127.0.0.1:8080"]) else {
        return;
    };
    assert_unprivileged(&w.nexd);
    let body = payload(3 << 20, 42);
    let file = w.scratch.path().join("body.bin");
    std::fs::write(&file, &body).unwrap();
    let _http = Background::spawn_ready({
        let mut c = w.net.a.command(&testkit());
        c.args(["http-serve", "127.0.0.1:8080", &file.display().to_string()]);
        c
    })
    .unwrap();
    let out = w.scratch.path().join("fetched.bin");
    w.net
        .b
        .run(&[
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "30",
            "-o",
            &out.display().to_string(),
            &format!("http://{NEXD_ADDR}:443/body.bin"),
        ])
        .unwrap_or_else(|e| panic!("{e}\n{}", w.nexd.log()));
    assert_eq!(sha256(&std::fs::read(&out).unwrap()), sha256(&body));
    assert!(w.peer.as_ref().unwrap().has_handshake());
    // nexd logs the handshake from its 100 ms timer tick, which may come after a fast fetch.
    assert!(
        wait_until(Duration::from_secs(5), || w
            .nexd
            .log()
            .contains("handshake completed")),
        "{}",
        w.nexd.log()
    );
}

/// A PostgreSQL server in the peer's namespace, run as the postgres user.
struct Postgres {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Postgres {
    fn start(ns: &netns::Netns) -> Result<Postgres, String> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("postgresql not installed: {e}"))?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("postgres").exists())
            .ok_or("no postgres binary")?;
        let dir = tempfile::Builder::new()
            .prefix("nexd-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        let as_pg = [
            "setpriv",
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ];
        let mut initdb: Vec<String> = as_pg.iter().map(|s| s.to_string()).collect();
        initdb.extend([
            bin.join("initdb").display().to_string(),
            "-D".into(),
            data.display().to_string(),
            "-A".into(),
            "trust".into(),
            "-U".into(),
            "postgres".into(),
        ]);
        let refs: Vec<&str> = initdb.iter().map(String::as_str).collect();
        netns::sh(&refs)?;
        let hba = data.join("pg_hba.conf");
        let mut conf = std::fs::read_to_string(&hba).map_err(|e| e.to_string())?;
        conf.push_str("\nhost all all 0.0.0.0/0 trust\n");
        std::fs::write(&hba, conf).map_err(|e| e.to_string())?;
        let child = ns
            .command("setpriv")
            .args(&as_pg[1..])
            .arg(bin.join("postgres"))
            .args([
                "-D",
                &data.display().to_string(),
                "-k",
                &dir.path().display().to_string(),
            ])
            .args([
                "-c",
                "listen_addresses=*",
                "-c",
                "port=5432",
                "-c",
                "fsync=off",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        Ok(Postgres { child, _dir: dir })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown; it cleans up its shared memory.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        if !wait_until(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        }) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[test]
fn seed_example_2_egress_reaches_a_remote_postgresql_with_psql() {
    let Some(w) = world(
        "egress_psql",
        &["--egress", &format!("tcp:5432:{PEER_ADDR}:5432")],
    ) else {
        return;
    };
    assert_unprivileged(&w.nexd);
    let _pg = match Postgres::start(&w.net.b) {
        Ok(pg) => pg,
        Err(e) => panic!("cannot start PostgreSQL: {e}"),
    };
    let psql = |sql: &str| {
        w.net.a.run(&[
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
    };
    // PostgreSQL needs a moment to start; poll through the tunnel.
    let mut last = String::new();
    let up = wait_until(Duration::from_secs(30), || match psql("select 1") {
        Ok(o) => o.trim() == "1",
        Err(e) => {
            last = e;
            false
        }
    });
    assert!(
        up,
        "psql never reached PostgreSQL through nexd: {last}\n{}",
        w.nexd.log()
    );
    psql("create table t (id int primary key, v text)").unwrap();
    psql("insert into t select g, md5(g::text) from generate_series(1, 20000) g").unwrap();
    // Pull ~700 KB back and check it against what PostgreSQL computes itself.
    let rows = psql("select string_agg(v, ',' order by id) from t").unwrap();
    let digest = psql("select md5(string_agg(v, ',' order by id)) from t").unwrap();
    assert_eq!(rows.trim().len(), 20000 * 33 - 1);
    assert_eq!(
        format!("{:x}", md5_of(rows.trim().as_bytes())),
        digest.trim()
    );
}

/// Minimal MD5 (RFC 1321) so the test can check PostgreSQL's md5() of what it received.
fn md5_of(data: &[u8]) -> u128 {
    let s: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32)
        .collect();
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_le_bytes());
    let (mut a0, mut b0, mut c0, mut d0) =
        (0x67452301u32, 0xefcdab89u32, 0x98badcfeu32, 0x10325476u32);
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(s[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, v) in [a0, b0, c0, d0].iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    u128::from_be_bytes(out)
}

#[test]
fn md5_matches_known_vectors() {
    assert_eq!(
        format!("{:032x}", md5_of(b"")),
        "d41d8cd98f00b204e9800998ecf8427e"
    );
    assert_eq!(
        format!("{:032x}", md5_of(b"abc")),
        "900150983cd24fb0d6963f7d28e17f72"
    );
}

#[test]
fn udp_egress_and_ingress_with_wireguard_go() {
    let Some(w) = world(
        "udp",
        &[
            "--egress",
            &format!("udp:7007:{PEER_ADDR}:7"),
            "--ingress",
            "udp:53:127.0.0.1:5300",
        ],
    ) else {
        return;
    };
    // Echo servers: one behind the peer (egress target), one on nexd's host (ingress target).
    let _far = Background::spawn_ready({
        let mut c = w.net.b.command(&testkit());
        c.args(["udp-echo", &format!("{PEER_ADDR}:7")]);
        c
    })
    .unwrap();
    let _near = Background::spawn_ready({
        let mut c = w.net.a.command(&testkit());
        c.args(["udp-echo", "127.0.0.1:5300"]);
        c
    })
    .unwrap();
    w.net
        .a
        .run(&[
            &testkit(),
            "udp-echo-check",
            "127.0.0.1:7007",
            "100",
            "1392",
        ])
        .unwrap_or_else(|e| panic!("egress: {e}\n{}", w.nexd.log()));
    w.net
        .b
        .run(&[
            &testkit(),
            "udp-echo-check",
            &format!("{NEXD_ADDR}:53"),
            "100",
            "1000",
        ])
        .unwrap_or_else(|e| panic!("ingress: {e}\n{}", w.nexd.log()));
    // Larger than the MTU: nexd fragments, the peer's kernel reassembles, and back.
    w.net
        .a
        .run(&[&testkit(), "udp-echo-check", "127.0.0.1:7007", "20", "4000"])
        .unwrap_or_else(|e| panic!("egress, fragmented: {e}\n{}", w.nexd.log()));
}

#[test]
fn tcp_echo_both_directions_with_wireguard_go() {
    let Some(w) = world(
        "tcp_echo",
        &[
            "--egress",
            &format!("tcp:7000:{PEER_ADDR}:7"),
            "--ingress",
            "tcp:7:127.0.0.1:7001",
        ],
    ) else {
        return;
    };
    let _far = Background::spawn_ready({
        let mut c = w.net.b.command(&testkit());
        c.args(["tcp-echo", &format!("{PEER_ADDR}:7")]);
        c
    })
    .unwrap();
    let _near = Background::spawn_ready({
        let mut c = w.net.a.command(&testkit());
        c.args(["tcp-echo", "127.0.0.1:7001"]);
        c
    })
    .unwrap();
    w.net
        .a
        .run(&[
            &testkit(),
            "tcp-echo-check",
            "127.0.0.1:7000",
            "8388608",
            "1",
        ])
        .unwrap_or_else(|e| panic!("egress: {e}\n{}", w.nexd.log()));
    w.net
        .b
        .run(&[
            &testkit(),
            "tcp-echo-check",
            &format!("{NEXD_ADDR}:7"),
            "8388608",
            "2",
        ])
        .unwrap_or_else(|e| panic!("ingress: {e}\n{}", w.nexd.log()));
}
