//! Passwords are hashed and verified in their Unicode NFKC form (DESIGN.md
//! §2): the same password typed on two keyboards (composed or decomposed
//! accents, full-width letters) is one password. Hashes made before that
//! were made from the raw input; this module decides, per verification,
//! which Argon2 runs happen, so that the work depends on the input alone
//! and never tells a known user from an unknown one.

use crate::auth::error::HashError;
use unicode_normalization::UnicodeNormalization;

/// The form every password is checked, hashed and verified in.
pub fn normalize(password: &str) -> String {
    password.nfkc().collect()
}

/// What a hash worker does with a password: the seam the tests count
/// Argon2 runs through.
pub(crate) trait Argon2Work {
    fn verify(&mut self, password: &str, phc: &str) -> bool;
    fn hash(&mut self, password: &str) -> Result<String, HashError>;
}

/// `HashSlot::verify` on the worker: (matched, the hash to store instead
/// of a matching pre-normalisation one). The Argon2 verifications run
/// depend on `password` alone: one, plus one when NFKC changes it.
pub(crate) fn verify_job(
    worker: &mut impl Argon2Work,
    password: &str,
    phc: String,
    pre_nfkc: bool,
    dummy: &str,
) -> (bool, Option<Result<String, HashError>>) {
    let normalized = normalize(password);
    let matched = worker.verify(&normalized, &phc);
    let raw_matched = normalized != password && {
        let against = if pre_nfkc { phc.as_str() } else { dummy };
        worker.verify(password, against) && pre_nfkc
    };
    // After a match only, so the extra hash says nothing to someone
    // without the password. A match of the NFKC form means the hash is
    // already of an NFKC-stable password: only its mark changes.
    let upgrade = match (pre_nfkc, matched, raw_matched) {
        (true, true, _) => Some(Ok(phc)),
        (true, false, true) => Some(worker.hash(&normalized)),
        _ => None,
    };
    (matched || raw_matched, upgrade)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::passwords::Worker;

    /// Counts the Argon2 runs of a real worker.
    struct Counting<'a> {
        worker: &'a mut Worker,
        verifications: usize,
    }

    impl Argon2Work for Counting<'_> {
        fn verify(&mut self, password: &str, phc: &str) -> bool {
            self.verifications += 1;
            self.worker.verify(password, phc)
        }

        fn hash(&mut self, password: &str) -> Result<String, HashError> {
            self.worker.hash(password)
        }
    }

    /// "ﬁ" (U+FB01) and full-width letters: NFKC changes them.
    const RAW: &str = "ﬁｎｅ-tangerine-orbit";

    #[test]
    fn nfkc_forms_are_one_password() {
        let mut worker = Worker::new().expect("worker");
        let normalized = normalize(RAW);
        assert_eq!(normalized, "fine-tangerine-orbit");
        let phc = worker.hash(&normalized).expect("hash");
        let dummy = worker.hash("some dummy password").expect("hash");
        for input in [RAW, normalized.as_str()] {
            let (matched, upgrade) = verify_job(&mut worker, input, phc.clone(), false, &dummy);
            assert!(matched, "{input}");
            assert!(upgrade.is_none(), "a normalised hash is never replaced");
        }
    }

    #[test]
    fn only_a_pre_normalisation_hash_gets_the_raw_form_check() {
        let mut worker = Worker::new().expect("worker");
        let raw_phc = worker.hash(RAW).expect("hash");
        let dummy = worker.hash("some dummy password").expect("hash");
        // Marked pre-normalisation: the raw form matches, and the hash of
        // the NFKC form is handed back to replace it.
        let (matched, upgrade) = verify_job(&mut worker, RAW, raw_phc.clone(), true, &dummy);
        assert!(matched);
        let new = upgrade.expect("an upgrade").expect("hashed");
        assert!(worker.verify(&normalize(RAW), &new));
        // The same hash taken for a normalised one: no raw-form check.
        let (matched, upgrade) = verify_job(&mut worker, RAW, raw_phc, false, &dummy);
        assert!(!matched);
        assert!(upgrade.is_none());
    }

    /// Unknown users, normalised hashes and pre-normalisation hashes cost
    /// the same Argon2 verifications for the same input.
    #[test]
    fn the_work_depends_on_the_input_alone() {
        let mut worker = Worker::new().expect("worker");
        let dummy = worker.hash("some dummy password").expect("hash");
        let other = worker.hash("another password here").expect("hash");
        for (input, expected) in [("plain-ascii-password", 1), (RAW, 2)] {
            for (phc, pre_nfkc) in [(&dummy, false), (&other, false), (&other, true)] {
                let mut counting = Counting {
                    worker: &mut worker,
                    verifications: 0,
                };
                let (matched, _) = verify_job(&mut counting, input, phc.clone(), pre_nfkc, &dummy);
                assert!(!matched);
                assert_eq!(counting.verifications, expected, "{input} {pre_nfkc}");
            }
        }
    }
}
