//! The local servers the tests talk to. Each is started by `scripts/emulators/<name>.sh start
//! RUN_DIR` (`scripts/test.sh` starts them all), which writes `RUN_DIR/<name>.env` exporting the
//! `SLUICE_TEST_*` variable read here; without it the loopback default is used.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A local server: its env var, loopback default and start script.
struct Server {
    var: &'static str,
    default: &'static str,
    what: &'static str,
    script: &'static str,
}

impl Server {
    /// The endpoint; panics with the way to start the server when nothing answers there.
    fn endpoint(&self) -> String {
        let url = std::env::var(self.var).unwrap_or_else(|_| self.default.to_string());
        let host = url.trim_start_matches("http://").trim_end_matches('/');
        assert!(
            answers(host),
            "no {} answers at {url} ({}): run the tests through scripts/test.sh, or start one with \
             `scripts/emulators/{}.sh start DIR` and source DIR/{}.env",
            self.what,
            self.var,
            self.script,
            self.script,
        );
        url
    }
}

/// Whether something accepts TCP connections at `host:port`.
pub fn answers(host: &str) -> bool {
    host.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

/// kinesis-local: `SLUICE_TEST_KINESIS_ENDPOINT`, else `http://127.0.0.1:4567`.
pub fn kinesis() -> String {
    Server {
        var: "SLUICE_TEST_KINESIS_ENDPOINT",
        default: "http://127.0.0.1:4567",
        what: "Kinesis emulator (kinesis-local)",
        script: "kinesis",
    }
    .endpoint()
}

/// moto: `SLUICE_TEST_DYNAMODB_ENDPOINT`, else `http://127.0.0.1:5000`.
pub fn dynamodb() -> String {
    Server {
        var: "SLUICE_TEST_DYNAMODB_ENDPOINT",
        default: "http://127.0.0.1:5000",
        what: "DynamoDB emulator (moto)",
        script: "dynamodb",
    }
    .endpoint()
}

/// The shared Kafka broker (tansu): `SLUICE_TEST_KAFKA_BROKERS`, else `127.0.0.1:9092`.
pub fn kafka_brokers() -> String {
    Server {
        var: "SLUICE_TEST_KAFKA_BROKERS",
        default: "127.0.0.1:9092",
        what: "Kafka broker (tansu)",
        script: "kafka",
    }
    .endpoint()
}

/// noida-db, the second Kafka broker, for what tansu cannot test (transactions, fencing,
/// `read_committed`, true high watermarks): `SLUICE_TEST_NOIDA_BROKERS`, written by
/// `scripts/emulators/noida.sh`.
pub fn noida_brokers() -> String {
    Server {
        var: "SLUICE_TEST_NOIDA_BROKERS",
        default: "127.0.0.1:9093",
        what: "Kafka broker (noida-db)",
        script: "noida",
    }
    .endpoint()
}

/// The tansu binary, for tests that run a private broker (`SLUICE_TEST_TANSU_BIN`, written by
/// `scripts/emulators/kafka.sh`).
pub fn tansu_bin() -> String {
    std::env::var("SLUICE_TEST_TANSU_BIN").unwrap_or_else(|_| {
        panic!(
            "SLUICE_TEST_TANSU_BIN is not set: run the tests through scripts/test.sh, or \
             `scripts/emulators/kafka.sh start DIR` and source DIR/kafka.env"
        )
    })
}
