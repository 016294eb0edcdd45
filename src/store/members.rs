//! Channel memberships: who may read and post where, and which channels a
//! connecting user is subscribed to. The queries are [`super::Tx`]'s
//! `add_member`, `remove_member`, `is_member`, `members`, `channels_of`,
//! `member_count` and `each_member`; this module holds their tests, run on
//! every backend.

#[cfg(test)]
mod tests {
    use super::super::testutil::each_backend;

    #[test]
    fn add_remove_is_member_count() {
        each_backend(|tx| {
            assert!(tx.add_member("C1", "U1", 10).unwrap());
            assert!(!tx.add_member("C1", "U1", 11).unwrap(), "already a member");
            assert!(tx.add_member("C1", "U2", 12).unwrap());
            assert!(tx.is_member("C1", "U1").unwrap());
            assert!(!tx.is_member("C1", "U3").unwrap());
            assert!(!tx.is_member("C2", "U1").unwrap());
            assert_eq!(tx.member_count("C1").unwrap(), 2);
            assert_eq!(tx.member_count("C2").unwrap(), 0);
            assert!(tx.remove_member("C1", "U1").unwrap());
            assert!(
                !tx.remove_member("C1", "U1").unwrap(),
                "not a member any more"
            );
            assert!(!tx.is_member("C1", "U1").unwrap());
            assert_eq!(tx.member_count("C1").unwrap(), 1);
            let joined = tx
                .scalar("SELECT joined FROM members WHERE channel_id = 'C1' AND user_id = 'U2'")
                .unwrap();
            assert_eq!(joined, 12);
        });
    }

    #[test]
    fn list_members_pages_and_channels_of() {
        each_backend(|tx| {
            for i in (0..250).rev() {
                tx.add_member("C1", &format!("U{i:04}"), 0).unwrap();
            }
            tx.add_member("C2", "U0003", 0).unwrap();
            tx.add_member("G1", "U0003", 0).unwrap();
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let (rows, more) = tx.members("C1", cursor.as_deref(), 100).unwrap();
                assert!(rows.len() <= 100);
                seen.extend(rows.iter().cloned());
                if !more {
                    break;
                }
                cursor = rows.last().cloned();
            }
            assert_eq!(
                seen,
                (0..250).map(|i| format!("U{i:04}")).collect::<Vec<_>>()
            );
            assert_eq!(tx.channels_of("U0003").unwrap(), ["C1", "C2", "G1"]);
            assert_eq!(tx.channels_of("U0004").unwrap(), ["C1"]);
            assert!(tx.channels_of("U9").unwrap().is_empty());
            assert_eq!(tx.members("C9", None, 10).unwrap(), (vec![], false));
        });
    }

    #[test]
    fn each_member_visits_every_membership_in_order() {
        each_backend(|tx| {
            tx.add_member("C2", "U1", 0).unwrap();
            tx.add_member("C1", "U2", 0).unwrap();
            tx.add_member("C1", "U1", 0).unwrap();
            let mut seen = Vec::new();
            let n = tx
                .each_member(&mut |c, u| seen.push(format!("{c}/{u}")))
                .unwrap();
            assert_eq!(n, 3);
            assert_eq!(seen, ["C1/U1", "C1/U2", "C2/U1"]);
        });
    }
}
