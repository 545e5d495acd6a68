use super::*;

#[test]
fn micros_keep_nanosecond_precision() {
    assert_eq!(micros(0), "0.000");
    assert_eq!(micros(1), "0.001");
    assert_eq!(micros(600_000_000_000), "600000000.000");
    assert_eq!(micros(8_571_428_572), "8571428.572");
}

#[test]
fn bucket_names_follow_id_and_limit_and_hide_both() {
    let l = Limit::from_raw(10, 60, None).unwrap();
    let other = Limit::from_raw(10, 60, Some(20)).unwrap();
    assert_eq!(bucket_name("key_a", l), bucket_name("key_a", l));
    assert_ne!(bucket_name("key_a", l), bucket_name("key_b", l));
    assert_ne!(bucket_name("key_a", l), bucket_name("key_a", other));
    let name = redis_key("kg", "b", &bucket_name("key_a", l));
    assert!(name.starts_with("kg:b:") && name.len() == 5 + 32, "{name}");
    assert!(!name.contains("key_a"));
    assert_ne!(
        used_name("key_a").to_vec(),
        bucket_name("key_a", l).to_vec()
    );
}

#[test]
fn answers_are_parsed_or_refused() {
    use redis::Value;
    let now = || Value::BulkString(b"1796218965111592".to_vec());
    let ok = [
        Value::Int(3),
        now(),
        Value::BulkString(b"1500.250".to_vec()),
        Value::Int(1),
        Value::Int(1),
        Value::BulkString(b"0.000".to_vec()),
        Value::Int(0),
        Value::Int(0),
        Value::BulkString(b"42.000".to_vec()),
        Value::Int(2),
        Value::Int(0),
    ];
    assert_eq!(
        parse_answer(&ok, 3, 77).unwrap(),
        SyncAnswer::Applied {
            redis_now: 1_796_218_965_111_592,
            instances: 3,
            buckets: vec![
                FleetBucket {
                    level: 1_500_250,
                    share: Share::Shared,
                    reserved: true
                },
                FleetBucket {
                    level: 0,
                    share: Share::Alone { until: 77 },
                    reserved: false
                },
                FleetBucket {
                    level: 42_000,
                    share: Share::Held,
                    reserved: false
                }
            ]
        }
    );
    assert!(
        matches!(
            parse_answer(&[Value::Int(0), now()], 0, 0).unwrap(),
            SyncAnswer::Applied { instances: 1, .. }
        ),
        "never 0 instances"
    );
    assert_eq!(
        parse_answer(&[Value::Int(-1), now()], 2, 0).unwrap(),
        SyncAnswer::Late {
            redis_now: 1_796_218_965_111_592
        },
        "a late call carries no buckets, whatever was asked"
    );
    assert!(parse_answer(&ok, 1, 0).is_err());
    let one = |share: i64, reserved: i64| {
        [
            Value::Int(1),
            now(),
            Value::BulkString(b"0".to_vec()),
            Value::Int(share),
            Value::Int(reserved),
        ]
    };
    assert!(parse_answer(&one(1, 0), 1, 0).is_ok());
    assert!(parse_answer(&one(3, 0), 1, 0).is_err(), "no such share");
    assert!(parse_answer(&one(-1, 0), 1, 0).is_err(), "no such share");
    assert!(parse_answer(&one(1, 2), 1, 0).is_err(), "one token at most");
    assert!(parse_answer(&[Value::Int(3)], 0, 0).is_err(), "no time");
    assert!(
        parse_answer(
            &[
                Value::Int(1),
                now(),
                Value::Int(5),
                Value::Int(0),
                Value::Int(0)
            ],
            1,
            0
        )
        .is_err()
    );
    let nan = Value::BulkString(b"nan".to_vec());
    assert!(parse_answer(&[Value::Int(1), nan], 0, 0).is_err());
}

#[test]
fn status_follows_the_fleet_mode() {
    assert_eq!(status(Fleet::Alone), None);
    assert_eq!(
        status(Fleet::Synced { instances: 3 }),
        Some(Status {
            up: true,
            instances: 3
        })
    );
    assert_eq!(
        status(Fleet::Degraded {
            instances: 2,
            mode: crate::config::OnUnavailable::Deny
        }),
        Some(Status {
            up: false,
            instances: 2
        })
    );
}
