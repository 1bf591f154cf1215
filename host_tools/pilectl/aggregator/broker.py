"""Brokers for a fleet: config, users and ACL written from the fleet, and the process.

Each pile logs in as its own pile id and may only publish its own `up` and `status`
topics and read its own `down` topic (a Mosquitto ACL `pattern` on `%u`); each
aggregator has its own user, reads every pile's `up` and `status`, writes every `down`,
and shares the `<prefix>-agg/` topics with the other aggregators (docs/aggregator.md).
Anonymous logins are refused. Tests and benches run Mosquitto on 127.0.0.1 (`Mosquitto`);
`RabbitMQ` runs a private RabbitMQ node with its MQTT plugin and the same rules, for
`make test-rabbitmq` (the piles and workers use plain MQTT 3.1.1, so any broker will do).
An operator writes a site's Mosquitto files with `pile-aggregator broker-config`.
"""

import base64
import hashlib
import json
import os
import resource
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

from pilectl.sim.harness import free_port, stop_process

DEFAULT_PREFIX = "v2g"
NOT_IN_PILE_ID = "/+#"  # topic separators and wildcards: a pile id is one topic level
# Mosquitto 2.0 drops a QoS 0 message for a client once max_queued_messages packets wait
# for its socket. A worker reads every TELEMETRY of its piles, each second, and falls
# behind for seconds at a fleet's start (thousands of HELLOs and first requests at
# once): with 100 it lost the HELLOs of about 250 of 10,000 piles. Room for this many
# messages a user (pile or worker) before any is dropped: 5 s of a lone worker's fleet.
QUEUED_PER_USER = 5
_MIN_QUEUED = 1000
_SBIN = ":/usr/sbin:/usr/local/sbin"  # where Debian puts the broker, off a user's PATH


class BrokerError(RuntimeError):
    pass


def acl(aggregators, prefix=DEFAULT_PREFIX, discovery_prefix=None, home_assistant=()):
    """The ACL file's text for these aggregator user names. With `discovery_prefix`
    (Home Assistant's discovery on: homeassistant.py), the aggregators also write the
    discovery configs and the piles' JSON values and read the owner's commands, and each
    `home_assistant` user (Home Assistant's own login) may read those and the piles'
    status and send the owner's commands, nothing else."""
    lines = ["# written by pile-aggregator: piles by pattern, aggregators by name", ""]
    ha = [f"topic write {discovery_prefix}/#", f"topic write {prefix}/+/ha/state",
          f"topic read {prefix}/+/ha/+/set"] if discovery_prefix else []
    for name in aggregators:
        lines += [f"user {name}", f"topic read {prefix}/+/up", f"topic read {prefix}/+/status",
                  f"topic write {prefix}/+/down", f"topic readwrite {prefix}-agg/#", *ha, ""]
    for name in home_assistant if discovery_prefix else ():
        lines += [f"user {name}", f"topic read {discovery_prefix}/#",
                  f"topic write {discovery_prefix}/status",  # its birth message
                  f"topic read {prefix}/+/status", f"topic read {prefix}/+/ha/state",
                  f"topic write {prefix}/+/ha/+/set", ""]
    lines += ["# every other user is a pile, named by its pile id",
              f"pattern write {prefix}/%u/up", f"pattern write {prefix}/%u/status",
              f"pattern read {prefix}/%u/down", ""]
    return "\n".join(lines)


def kept_password(path):
    """The broker password kept in the file `path`, made (random, owner-only) when
    missing: a site's config and a pile's board file, or a bench's broker and its
    emulated piles, read the same file."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(18) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def check_pile_id(pile_id):
    bad = [c for c in NOT_IN_PILE_ID if c in pile_id]
    if bad or not pile_id:
        raise BrokerError(f"pile id {pile_id!r} cannot be an MQTT user and topic level: "
                          f"no {' '.join(NOT_IN_PILE_ID)} and not empty")


def make_certificates(directory, hostname="localhost"):
    """A CA and a broker certificate it signed for `hostname` and 127.0.0.1, made with the
    openssl command: (ca.pem, ca.der, broker.pem, broker.key) in `directory`. For benches
    and tests; a site's broker has its operator's certificates."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key = directory / "broker.pem", directory / "broker.key"
    request = directory / "broker.csr"
    (directory / "san.cnf").write_text(f"subjectAltName=DNS:{hostname},IP:127.0.0.1\n")
    for args in (
            ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", ca_key, "-out", ca, "-days", "30", "-subj", "/CN=pile bench CA"],
            ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", request, "-subj", f"/CN={hostname}"],
            ["x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", "30", "-extfile", directory / "san.cnf"],
            ["x509", "-in", ca, "-outform", "der", "-out", directory / "ca.der"]):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
    return ca, directory / "ca.der", cert, key


def write_config(directory, port, users, aggregators, prefix=DEFAULT_PREFIX, host="127.0.0.1",
                 tls_port=None, bench=False, discovery_prefix=None, home_assistant=()):
    """mosquitto.conf, passwd (hashed by mosquitto_passwd) and acl in `directory`, for
    `users` {name: password} of which `aggregators` are the aggregators and
    `home_assistant` Home Assistant's logins (with `discovery_prefix`: `acl`); the conf
    path.
    With `tls_port`, a second listener there takes TLS with `make_certificates`' files.
    `bench`: a broker run by whoever wrote the files, in their own directory."""
    if shutil.which("mosquitto_passwd") is None:
        raise BrokerError("mosquitto_passwd is missing: apt-get install mosquitto")
    for name in users:
        if name not in aggregators and name not in home_assistant:
            check_pile_id(name)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    passwd = directory / "passwd"
    passwd.write_text("".join(f"{name}:{password}\n" for name, password in users.items()))
    passwd.chmod(0o600)
    subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True, capture_output=True)
    (directory / "acl").write_text(acl(aggregators, prefix, discovery_prefix, home_assistant))
    tls = []
    if tls_port is not None:
        ca, _, cert, key = make_certificates(directory / "tls")
        tls = [f"listener {tls_port} {host}", f"cafile {ca}", f"certfile {cert}",
               f"keyfile {key}"]
    conf = directory / "mosquitto.conf"
    conf.write_text("\n".join([
        f"listener {port} {host}", *tls, "allow_anonymous false", f"password_file {passwd}",
        f"acl_file {directory / 'acl'}", "persistence false", "log_dest stderr",
        "log_type error", "log_type warning",
        f"max_queued_messages {max(_MIN_QUEUED, QUEUED_PER_USER * len(users))}",
        # started as root (a CI machine), it would drop to the mosquitto user, which
        # cannot read a private directory: a bench's broker stays who started it
        *(["user root"] if bench and os.geteuid() == 0 else []), ""]))
    return conf


def _more_files():
    """A socket a client: the broker may keep as many files open as the system allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class _BrokerProcess:
    """What both test brokers do with their process: start it with its output in a log
    file in `directory`, wait for its MQTT listener on `port`, stop with the context."""

    log_name = "broker.log"

    def _launch(self, args, **popen):
        with open(self.directory / self.log_name, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                            preexec_fn=_more_files, **popen)

    def _listening(self, timeout_s):
        """True once the MQTT port takes connections; False if the process ended first or
        `timeout_s` passed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def log(self):
        path = self.directory / self.log_name
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Mosquitto(_BrokerProcess):
    """A Mosquitto process on 127.0.0.1 with a config from `write_config`; `stop()` and
    `start()` again keep the port, as a broker restarted by its operator does."""

    log_name = "mosquitto.log"

    def __init__(self, directory, users, aggregators, prefix=DEFAULT_PREFIX, port=None,
                 tls=False, discovery_prefix=None, home_assistant=()):
        self.binary = shutil.which("mosquitto", path=os.environ.get("PATH", "") + _SBIN)
        if self.binary is None:
            raise BrokerError("mosquitto is missing: apt-get install mosquitto (make does)")
        self.port = port or free_port()
        self.tls_port = free_port() if tls else None  # and the CA in directory/tls/ca.der
        self.directory = Path(directory)
        self.conf = write_config(directory, self.port, users, aggregators, prefix,
                                 tls_port=self.tls_port, bench=True,
                                 discovery_prefix=discovery_prefix,
                                 home_assistant=home_assistant)
        self.process = None

    def start(self, timeout_s=10):
        self._launch([self.binary, "-c", str(self.conf)])
        if self._listening(timeout_s):
            return self
        if self.process.poll() is not None:
            raise BrokerError(f"mosquitto exited with {self.process.returncode}: "
                              f"{self.log()[-500:]}")
        self.stop()
        raise BrokerError(f"mosquitto did not listen on port {self.port} in {timeout_s} s")

    def stop(self):
        if self.process is not None:
            stop_process(self.process)
        self.process = None


_RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")  # the Debian package's own scripts, which run
# as the calling user (the /usr/sbin wrappers switch to the rabbitmq user)


def _rabbit_hash(password):
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt || sha256(salt || password))."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def rabbit_definitions(users, aggregators, prefix=DEFAULT_PREFIX):
    """RabbitMQ definitions (users, permissions, topic permissions) with the ACL of `acl`:
    MQTT topics are routing keys on amq.topic there, with `/` written `.`."""
    p = prefix.replace(".", r"\.")
    pile = (rf"^{p}\.{{username}}\.(up|status)$", rf"^{p}\.{{username}}\.down$")
    worker = (rf"^({p}\.[^.]+\.down|{p}-agg\..*)$", rf"^({p}\.[^.]+\.(up|status)|{p}-agg\..*)$")
    return {
        "users": [{"name": name, "password_hash": _rabbit_hash(password),
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []}
                  for name, password in users.items()],
        "vhosts": [{"name": "/"}],
        "permissions": [{"user": name, "vhost": "/", "configure": ".*", "write": ".*",
                         "read": ".*"} for name in users],
        "topic_permissions": [
            {"user": name, "vhost": "/", "exchange": "amq.topic",
             "write": (worker if name in aggregators else pile)[0],
             "read": (worker if name in aggregators else pile)[1]} for name in users]}


class RabbitMQ(_BrokerProcess):
    """A private RabbitMQ node with the MQTT plugin on 127.0.0.1, as `Mosquitto`: the
    same users and topic rules (loaded from definitions at boot), `stop()` and `start()`
    keep its port. A node takes about 10 s to boot."""

    log_name = "rabbitmq.out"

    def __init__(self, directory, users, aggregators, prefix=DEFAULT_PREFIX, port=None,
                 tls=False):
        if not (_RABBIT_BIN / "rabbitmq-server").exists():
            raise BrokerError("rabbitmq-server is missing: apt-get install rabbitmq-server "
                              "(make test-rabbitmq does)")
        for name in users:
            if name not in aggregators:
                check_pile_id(name)
                if "." in name:
                    raise BrokerError(f"pile id {name!r}: RabbitMQ writes topic levels "
                                      "with dots, so a pile id may not hold one there")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls_port = free_port() if tls else None
        self.node = f"piletest{self.port}@localhost"
        (self.directory / "definitions.json").write_text(
            json.dumps(rabbit_definitions(users, aggregators, prefix)))
        conf = [f"listeners.tcp.default = {free_port()}",
                f"mqtt.listeners.tcp.default = {self.port}", "mqtt.allow_anonymous = false",
                "loopback_users = none",
                f"load_definitions = {self.directory / 'definitions.json'}"]
        if tls:
            ca, _, cert, key = make_certificates(self.directory / "tls")
            conf += [f"mqtt.listeners.ssl.default = {self.tls_port}",
                     f"ssl_options.cacertfile = {ca}", f"ssl_options.certfile = {cert}",
                     f"ssl_options.keyfile = {key}", "ssl_options.verify = verify_none"]
        (self.directory / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
        (self.directory / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        self.env = dict(os.environ, HOME=str(self.directory), RABBITMQ_NODENAME=self.node,
                        RABBITMQ_DIST_PORT=str(free_port()),
                        RABBITMQ_MNESIA_BASE=str(self.directory / "mnesia"),
                        RABBITMQ_LOG_BASE=str(self.directory / "log"),
                        RABBITMQ_CONFIG_FILE=str(self.directory / "rabbitmq"),
                        RABBITMQ_ENABLED_PLUGINS_FILE=str(self.directory / "enabled_plugins"),
                        RABBITMQ_PID_FILE=str(self.directory / "pid"))
        self.process = None

    def _ctl(self, *args, timeout_s=90):
        return subprocess.run([str(_RABBIT_BIN / "rabbitmqctl"), "-n", self.node, *args],
                              env=self.env, capture_output=True, text=True, timeout=timeout_s)

    def start(self, timeout_s=90):
        self._launch([str(_RABBIT_BIN / "rabbitmq-server")], env=self.env,
                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:  # await_startup fails at once while the node is not yet known to epmd
            done = self._ctl("await_startup", "--timeout", "10", timeout_s=30)
            if done.returncode == 0:
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"RabbitMQ did not start: {done.stderr[-500:]}")
            time.sleep(0.5)
        if self._listening(10):  # the MQTT listener comes with the plugin
            return self
        self.stop()
        raise BrokerError(f"RabbitMQ's MQTT listener did not open port {self.port}")

    def stop(self):
        if self.process is None:
            return
        if self.process.poll() is None:
            self._ctl("stop")
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        self.process = None


def broker_class(name=None):
    """The broker the tests and benches start: PILE_BROKER=rabbitmq picks RabbitMQ."""
    name = name or os.environ.get("PILE_BROKER", "mosquitto")
    kinds = {"mosquitto": Mosquitto, "rabbitmq": RabbitMQ}
    if name not in kinds:
        raise BrokerError(f"PILE_BROKER={name!r}: use mosquitto or rabbitmq")
    return kinds[name]
