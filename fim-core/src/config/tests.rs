//! The configuration's unit tests.

use super::*;

fn errors_of(text: &str) -> Vec<ConfigError> {
    Config::parse(text).expect_err("must be refused")
}

#[test]
fn the_builtin_configuration_round_trips_through_its_rendering() {
    let builtin = Config::builtin();
    let text = builtin.render();
    assert_eq!(Config::parse(&text), Ok(builtin), "{text}");
}

#[test]
fn any_configuration_round_trips_through_its_rendering() {
    let config = Config {
        daemon: Daemon {
            sensor: Sensor::Fanotify,
            state_dir: "/srv/fim state/\"q\"".into(),
            threads: Some(3),
            hash_max_size: 3 * 1000,
            hash_quiet: Duration::from_millis(1500),
            rescan_interval: None,
            log_level: log::LevelFilter::Debug,
        },
        rules: vec![
            Rule {
                id: Some("FIM-1".into()),
                recursive: false,
                hash: false,
                rate_limit: Some((100, Duration::from_secs(60))),
                attributes: Some(vec!["mode".into(), "uid".into()]),
                exclude: vec!["*.swp".into(), "/etc/x/**".into()],
                operations: Some(vec!["unlink".into(), "metadata".into()]),
                severity: Severity::Critical,
                techniques: vec!["T1053.003".into(), "T1037".into()],
                tags: vec!["PCI-DSS 11.5".into(), "CIS \"6.1\"".into()],
                ..Rule::new("a \\ b", vec!["/etc/*.conf".into(), "/x y".into()])
            },
            Rule::new("second", vec!["/srv".into()]),
        ],
        sinks: every_kind_of_sink(),
        metrics: Metrics {
            address: Some("[::1]:19478".parse().expect("address")),
            sink_failing_after: Duration::from_secs(90),
            sensor_stall_after: Duration::from_secs(20),
        },
        windows: Windows::builtin(),
    };
    assert_eq!(Config::parse(&config.render()), Ok(config));
    let off = Config {
        metrics: Metrics {
            address: None,
            ..Metrics::default()
        },
        ..Config::builtin()
    };
    assert_eq!(Config::parse(&off.render()), Ok(off));
}

#[test]
fn each_metrics_problem_is_reported_with_its_key_and_line() {
    let text = "\
[metrics]
address = \"localhost\"
sink_failing_after = \"0s\"
sensor_stall_after = 5
port = 1

[[rule]]
name = \"etc\"
paths = [\"/etc\"]
";
    let got: Vec<(usize, String)> = errors_of(text)
        .into_iter()
        .map(|e| (e.line, e.key))
        .collect();
    assert_eq!(
        got,
        [
            (2, "metrics.address"),
            (3, "metrics.sink_failing_after"),
            (4, "metrics.sensor_stall_after"),
            (5, "metrics.port"),
        ]
        .map(|(l, k)| (l, k.to_owned()))
    );
}

/// One sink of each type, with every key set.
fn every_kind_of_sink() -> Vec<SinkConfig> {
    let tls = Tls {
        ca_file: Some("/etc/fim/ca.pem".into()),
        client_cert: Some("/etc/fim/client.pem".into()),
        client_key: Some("/etc/fim/client.key".into()),
    };
    let http = |token| Http {
        url: "https://siem.example:9200".into(),
        index: Some("logs-fim-default".into()),
        token: Some(token),
        batch_events: 1000,
        batch_wait: Duration::from_millis(500),
        gzip: false,
        tls: tls.clone(),
    };
    let sink = |name: &str, kind| SinkConfig {
        name: name.into(),
        kind,
        spool: Spool { max_size: 64 << 20 },
    };
    vec![
        sink("console", SinkKind::Stdout),
        sink(
            "archive",
            SinkKind::File {
                path: "/var/log/fim/events \"x\".json".into(),
                max_size: Some(100 << 20),
                keep: 7,
            },
        ),
        sink(
            "sentinel",
            SinkKind::Syslog(Syslog {
                address: "10.0.0.5:6514".into(),
                transport: Transport::Tls,
                payload: Payload::Cef,
                facility: 4,
                app_name: "fim-edge".into(),
                tls: tls.clone(),
            }),
        ),
        sink(
            "elastic",
            SinkKind::Elasticsearch(http(Secret::Env("ES_KEY".into()))),
        ),
        sink(
            "splunk",
            SinkKind::SplunkHec(http(Secret::File("/etc/fim/hec".into()))),
        ),
        sink(
            "hook",
            SinkKind::Webhook(http(Secret::Inline("s3cr3t".into()))),
        ),
    ]
}

#[test]
fn sinks_take_their_defaults_and_a_secret_is_never_printed() {
    let c = Config::parse(
        "[[rule]]\nname = \"etc\"\npaths = [\"/etc\"]\n\n\
         [sinks.siem]\ntype = \"syslog\"\naddress = \"siem:514\"\n\n\
         [sinks.hec]\ntype = \"splunk_hec\"\nurl = \"https://splunk:8088\"\ntoken = \"hunter2\"\n",
    )
    .expect("valid");
    let SinkKind::Syslog(sys) = &c.sinks[0].kind else {
        panic!("a syslog sink: {:?}", c.sinks[0]);
    };
    assert_eq!(
        (
            sys.transport,
            sys.payload,
            sys.facility,
            sys.app_name.as_str()
        ),
        (Transport::Tcp, Payload::Json, DEFAULT_FACILITY, "fim")
    );
    assert_eq!(c.sinks[0].spool.max_size, defaults::SPOOL_MAX_SIZE);
    let SinkKind::SplunkHec(hec) = &c.sinks[1].kind else {
        panic!("a HEC sink");
    };
    assert_eq!((hec.batch_events, hec.gzip), (500, true));
    assert!(
        !format!("{c:?}").contains("hunter2"),
        "the token shows in {c:?}"
    );
}

#[test]
fn each_sink_problem_is_reported_with_its_key_and_line() {
    let text = "\
[[rule]]
name = \"etc\"
paths = [\"/etc\"]

[sinks.a]
type = \"kafka\"

[sinks.b]
type = \"file\"
path = \"events.json\"
keep = 0

[sinks.c]
type = \"syslog\"
address = \"siem\"
transport = \"sctp\"
client_cert = \"/c.pem\"

[sinks.d]
type = \"elasticsearch\"
url = \"ftp://es\"
api_key = \"k\"
api_key_env = \"K\"

[sinks.e]
type = \"stdout\"
colour = true
spool_max_size = \"1 MiB\"

[sinks.\"bad name\"]
type = \"stdout\"

[sinks.f]
path = \"/x\"
";
    let got: Vec<(usize, String)> = errors_of(text)
        .into_iter()
        .map(|e| (e.line, e.key))
        .collect();
    let want: Vec<(usize, &str)> = vec![
        (6, "sinks.a.type"),
        (10, "sinks.b.path"),
        (11, "sinks.b.keep"),
        (13, "sinks.c"),
        (15, "sinks.c.address"),
        (16, "sinks.c.transport"),
        (19, "sinks.d"),
        (19, "sinks.d"),
        (21, "sinks.d.url"),
        (27, "sinks.e.colour"),
        (28, "sinks.e.spool_max_size"),
        (30, "sinks.bad name"),
        (33, "sinks.f"),
        (34, "sinks.f.path"),
    ];
    assert_eq!(
        got,
        want.iter()
            .map(|(l, k)| (*l, (*k).to_owned()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn the_builtin_configuration_uses_the_defaults_defined_once() {
    let c = Config::builtin();
    assert_eq!(c.daemon.hash_quiet, defaults::HASH_QUIET);
    assert_eq!(c.daemon.rescan_interval, Some(defaults::RESCAN_INTERVAL));
    assert_eq!(c.daemon.hash_max_size, defaults::HASH_MAX_SIZE);
    assert_eq!(c.daemon.state_dir, Path::new(defaults::STATE_DIR));
    let defender = c
        .rules
        .iter()
        .find(|r| r.name == DEFAULT_RULE)
        .expect("the Defender rule");
    assert_eq!(defender.paths.len(), watch::DEFAULT_WATCH.len());
}

#[test]
fn a_minimal_file_takes_the_defaults_for_what_it_does_not_say() {
    let c = Config::parse("[[rule]]\nname = \"etc\"\npaths = [\"/etc\"]\n").expect("valid");
    assert_eq!(c.daemon, Daemon::default());
    assert_eq!(c.rules[0].paths, vec!["/etc".to_owned()]);
}

#[test]
fn every_problem_is_reported_at_once_with_its_key_and_line() {
    let text = "\
[daemon]
sensor = \"kprobe\"
state_dir = \"var/lib/fim\"
threads = -1
hash_max_size = \"12 parsecs\"
hash_quiet = \"2\"
rescan_interval = \"soon\"
colour = \"blue\"

[[rule]]
name = \"etc\"
paths = [\"etc\", \"/etc/**/x\", \"/etc/[z\", 7]
recursive = \"yes\"

[[rule]]
name = \"etc\"
paths = [\"/srv\"]
";
    let errors = errors_of(text);
    let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (2, "daemon.sensor"),
            (3, "daemon.state_dir"),
            (4, "daemon.threads"),
            (5, "daemon.hash_max_size"),
            (6, "daemon.hash_quiet"),
            (7, "daemon.rescan_interval"),
            (8, "daemon.colour"),
            (12, "rule[1].paths[1]"),
            (12, "rule[1].paths[2]"),
            (12, "rule[1].paths[3]"),
            (12, "rule[1].paths[4]"),
            (13, "rule[1].recursive"),
            (16, "rule[2].name"),
        ],
        "{errors:#?}"
    );
    let text = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "line 2: `daemon.sensor`: `kprobe` is not a sensor",
        "`var/lib/fim` is not an absolute path",
        "`parsecs` is not a size unit",
        "`2` is not a duration with its unit",
        "line 8: `daemon.colour`: unknown key",
        "`etc` is not absolute",
        "only the last path component may contain wildcards",
        "`/etc/[z`",
        "line 16: `rule[2].name`: `etc` names another rule already",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn rule_keys_are_checked_one_by_one() {
    let text = "\
[[rule]]
name = \"r\"
id = \"\"
paths = [\"/etc\"]
exclude = [\"*.swp\", \"tmp/*\", \"/x/[\"]
operations = [\"rename\", \"append\", \"content\"]
severity = \"urgent\"
techniques = [\"T1053.003\", \"T105\", \"t1053\"]
tags = [\"PCI-DSS 11.5\", \"\"]
";
    let got: Vec<(usize, String)> = errors_of(text)
        .into_iter()
        .map(|e| (e.line, e.key))
        .collect();
    let want: Vec<(usize, String)> = [
        (3, "rule[1].id"),
        (5, "rule[1].exclude[2]"),
        (5, "rule[1].exclude[3]"),
        (6, "rule[1].operations[2]"),
        (7, "rule[1].severity"),
        (8, "rule[1].techniques[2]"),
        (8, "rule[1].techniques[3]"),
        (9, "rule[1].tags[2]"),
    ]
    .into_iter()
    .map(|(l, k)| (l, k.to_owned()))
    .collect();
    assert_eq!(got, want);
    let errors = errors_of("[[rule]]\nname = \"r\"\npaths = [\"/etc\"]\noperations = []\n");
    assert_eq!(errors[0].key, "rule[1].operations");
}

#[test]
fn operations_name_actions_or_groups() {
    let c = Config::parse(
        "[[rule]]\nname = \"logs\"\npaths = [\"/var/log\"]\n\
         operations = [\"unlink\", \"metadata\"]\nseverity = \"high\"\n",
    )
    .expect("valid");
    let actions = c.rules[0].actions().expect("listed");
    assert!(actions.contains(&Action::Unlink) && actions.contains(&Action::Chown));
    assert!(!actions.contains(&Action::Write) && !actions.contains(&Action::Rename));
    assert_eq!(c.rules[0].severity, Severity::High);
    assert_eq!(Config::builtin().rules[0].actions(), None);
}

#[test]
fn tilde_paths_are_under_every_home_and_a_root_prefixes_everything() {
    let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                  daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                  broken line\n\
                  alice:x:1000:1000:Alice,,,:/home/alice/:/bin/bash\n\
                  odd:x:1001:1001::/:/bin/sh\n\
                  again:x:1002:1002::/root:/bin/sh\n";
    let homes = homes_from_passwd(passwd);
    assert_eq!(homes, vec!["/root", "/usr/sbin", "/home/alice"]);
    let rule = Rule::new(
        "keys",
        vec![
            "~/.ssh/authorized_keys".into(),
            "/etc/ssh/sshd_config".into(),
        ],
    );
    let homes = vec!["/root".to_owned(), "/home/alice".to_owned()];
    assert_eq!(
        rule.resolved_paths("/", &homes),
        vec![
            "/root/.ssh/authorized_keys",
            "/home/alice/.ssh/authorized_keys",
            "/etc/ssh/sshd_config",
        ]
    );
    assert_eq!(
        rule.resolved_paths("/tmp/mirror/", &homes)[1],
        "/tmp/mirror/home/alice/.ssh/authorized_keys"
    );
    let errors = errors_of(
        "[[rule]]\nname = \"r\"\npaths = [\"~/ok\", \"~\", \"~//x\", \"~/*/x\", \"~user/x\"]\n",
    );
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "rule[1].paths[2]",
            "rule[1].paths[3]",
            "rule[1].paths[4]",
            "rule[1].paths[5]"
        ]
    );
    assert!(
        errors[2].message.contains("`~/*/x`"),
        "{}",
        errors[2].message
    );
}

#[test]
fn a_duplicate_name_is_reported_at_its_own_rule() {
    let errors = errors_of(
        "[[rule]]\npaths = [\"/a\"]\n\n[[rule]]\nname = \"x\"\npaths = [\"/b\"]\n\n\
         [[rule]]\nname = \"x\"\npaths = [\"/c\"]\n",
    );
    let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(got, vec![(1, "rule[1].name"), (9, "rule[3].name")]);
    assert!(
        errors_of(
            "[daemon]\nhash_quiet = \"300000000000y\"\n[[rule]]\nname = \"r\"\npaths = [\"/x\"]\n"
        )[0]
        .message
        .contains("longer than a year")
    );
    assert!(parse_rate("1/300000000000y").is_err());
}

#[test]
fn a_syntax_error_names_its_line() {
    let errors = errors_of("[daemon]\nsensor = \"auto\"\nthreads = = 2\n");
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].line, errors[0].key.as_str()), (3, "(syntax)"));
}

#[test]
fn a_file_without_rules_or_with_an_incomplete_rule_is_refused() {
    let errors = errors_of("[daemon]\nsensor = \"auto\"\n");
    assert_eq!(errors[0].key, "rule");
    let errors = errors_of("[[rule]]\npaths = []\n\n[[rule]]\nname = \"x\"\n");
    let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (1, "rule[1].name"),
            (2, "rule[1].paths"),
            (4, "rule[2].paths")
        ]
    );
}

#[test]
fn rate_limits_are_events_per_window() {
    assert_eq!(parse_rate("100/1m"), Ok((100, Duration::from_secs(60))));
    assert_eq!(parse_rate(" 5 / 2s "), Ok((5, Duration::from_secs(2))));
    for bad in ["100", "x/1m", "100/soon", "0/1m", "5/0s", "-1/1m"] {
        assert!(parse_rate(bad).is_err(), "{bad}");
    }
    let errors = errors_of("[[rule]]\nname = \"r\"\npaths = [\"/x\"]\nrate_limit = \"lots\"\n");
    assert_eq!(
        (errors[0].line, errors[0].key.as_str()),
        (4, "rule[1].rate_limit")
    );
}

#[test]
fn sizes_take_binary_and_decimal_units() {
    assert_eq!(parse_size("4096"), Ok(4096));
    assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
    assert_eq!(parse_size("512MiB"), Ok(512 << 20));
    assert_eq!(parse_size("3 KB"), Ok(3000));
    assert!(parse_size("1.5 GiB").is_err());
    assert!(parse_size("99999999999 TiB").is_err());
    assert_eq!(render_size(1 << 30), "1 GiB");
    assert_eq!(render_size(3 << 10), "3 KiB");
    assert_eq!(render_size(1536), "1536 B");
}

#[test]
fn sensor_names_are_unique_and_found_back() {
    for s in Sensor::ALL {
        assert_eq!(Sensor::from_name(s.name()), Some(s));
    }
    assert_eq!(Sensor::from_name("kprobe"), None);
}
