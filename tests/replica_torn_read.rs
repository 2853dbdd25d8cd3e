//! Invariant 2: a replica never shows a state that never existed on the primary, and a
//! read transaction never mixes two TXIDs. A primary moves money between accounts (the
//! total never changes) while readers on a replica run long read transactions over many
//! pages with a tiny page cache, sleeping between two sums: every sum must be the total,
//! and both sums and TXIDs of one transaction must agree.

mod harness;

use harness::*;
use std::process::{Command, Stdio};

const ACCOUNTS: i64 = 4000;
const BALANCE: i64 = 1000;

const WRITER: &str = r#"
import random, sqlite3, sys, time
ext, db, url, mode, seconds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(ext)
conn = sqlite3.connect(f"file:{db}?vfs=litestream&replica={url}&sync_interval=50ms", uri=True,
                       isolation_level=None, timeout=30)
if mode == "setup":
    conn.execute("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, pad TEXT)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO accounts VALUES (?, ?, ?)",
                     [(i, BALANCE, "%0200d" % i) for i in range(1, ACCOUNTS + 1)])
    conn.execute("COMMIT")
else:
    rng = random.Random(7)
    end = time.time() + seconds
    n = 0
    while time.time() < end:
        conn.execute("BEGIN")
        # Accounts far apart, so one transfer touches pages the reader scans at
        # different times.
        for _ in range(rng.randrange(1, 4)):
            a, b = rng.randrange(1, ACCOUNTS + 1), rng.randrange(1, ACCOUNTS + 1)
            amount = rng.randrange(1, 50)
            conn.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, a))
            conn.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, b))
        conn.execute("COMMIT")
        n += 1
        time.sleep(0.003)
print(conn.execute("SELECT litestream_sync(60000)").fetchone()[0])
"#;

const READER: &str = r#"
import json, random, sqlite3, sys, threading, time
ext, name, url, seconds, total = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(ext)
uri = f"file:{name}?vfs=litestream&role=replica&replica={url}&poll_interval=20ms&cache_size=256k"
bad, txids, count = [], set(), [0]
lock = threading.Lock()

def reader(seed):
    rng = random.Random(seed)
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA cache_size=10")
    end = time.time() + seconds
    while time.time() < end:
        conn.execute("BEGIN")
        s1, t1 = conn.execute("SELECT sum(balance), litestream_txid() FROM accounts").fetchone()
        time.sleep(rng.random() * 0.1)
        s2, t2, n = conn.execute("SELECT sum(balance), litestream_txid(), count(*) FROM accounts").fetchone()
        conn.execute("COMMIT")
        # Outside any explicit transaction too.
        s3 = conn.execute("SELECT sum(balance) FROM accounts").fetchone()[0]
        with lock:
            count[0] += 1
            txids.update([t1, t2])
            if s1 != total or s2 != total or s3 != total or t1 != t2:
                bad.append({"s1": s1, "s2": s2, "s3": s3, "t1": t1, "t2": t2, "rows": n})
    conn.close()

threads = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"transactions": count[0], "bad": bad[:10], "nbad": len(bad), "txids": len(txids),
                  "max_txid": max(txids)}))
"#;

fn python_script(code: &str) -> Command {
    let mut c = Command::new(python());
    c.arg("-c").arg(code);
    c
}

#[test]
fn read_transactions_never_mix_txids_or_see_torn_transfers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let consts = format!("ACCOUNTS = {ACCOUNTS}\nBALANCE = {BALANCE}\n");
    let writer = |mode: &str, seconds: &str| {
        let mut c = python_script(&format!("{consts}{WRITER}"));
        c.arg(extension()).arg(&db).arg(&url).arg(mode).arg(seconds);
        c
    };
    let out = writer("setup", "0").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let seconds = "8";
    let transfers = writer("transfer", seconds)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reader = python_script(READER)
        .arg(extension())
        .arg(dir.path().join("view.db"))
        .arg(&url)
        .arg(seconds)
        .arg((ACCOUNTS * BALANCE).to_string())
        .output()
        .unwrap();
    let transfers = transfers.wait_with_output().unwrap();
    assert!(
        transfers.status.success(),
        "{}",
        String::from_utf8_lossy(&transfers.stderr)
    );
    assert!(
        reader.status.success(),
        "reader failed: {}{}",
        String::from_utf8_lossy(&reader.stdout),
        String::from_utf8_lossy(&reader.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&reader.stdout).unwrap();
    eprintln!("{summary}");
    assert_eq!(summary["nbad"], 0, "torn or mixed reads: {summary}");
    assert!(summary["transactions"].as_u64().unwrap() >= 30, "{summary}");
    // The readers followed the primary through many TXIDs while they read.
    assert!(summary["txids"].as_u64().unwrap() >= 10, "{summary}");
}
