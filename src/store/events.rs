//! Persisted events that are not message rows: admin publishes of any event
//! type and membership events, stored before they are delivered. The
//! queries are [`super::Tx`]'s `insert_event` and `each_channel_max_ts`;
//! this module holds their tests, run on every backend.

#[cfg(test)]
mod tests {
    use super::super::testutil::{each_backend, message};
    use super::super::StoreError;

    #[test]
    fn insert_and_max() {
        each_backend(|tx| {
            tx.insert_event("C1", 5, "{}").unwrap();
            tx.insert_event("C1", 9, "{}").unwrap();
            tx.insert_event("C2", 7, "{}").unwrap();
            assert!(matches!(
                tx.insert_event("C1", 9, "{}"),
                Err(StoreError::Conflict)
            ));
            // Messages count too: the newest of both tables.
            tx.insert_message(&message("C2", 8, "U1", "x")).unwrap();
            tx.insert_message(&message("C3", 1, "U1", "x")).unwrap();
            let mut seen = Vec::new();
            tx.each_channel_max_ts(&mut |c, ts| seen.push((c.to_string(), ts)))
                .unwrap();
            seen.sort();
            assert_eq!(
                seen,
                vec![
                    ("C1".to_string(), 9),
                    ("C2".to_string(), 8),
                    ("C3".to_string(), 1)
                ]
            );
        });
    }
}
