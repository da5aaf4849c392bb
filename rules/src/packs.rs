//! The built-in Kafka rule pack, compiled into the binary.

use crate::Error;
use crate::rulefile::{Group, load_str};

/// Source text of `rules/packs/kafka.yml`.
pub const KAFKA_PACK: &str = include_str!("../packs/kafka.yml");

/// The pack's file name as it appears in errors and listings.
pub const KAFKA_PACK_NAME: &str = "builtin:kafka.yml";

/// Loads the built-in Kafka pack.
///
/// # Errors
/// Only if the pack shipped broken, which its tests prevent.
pub fn kafka() -> Result<Vec<Group>, Error> {
    load_str(KAFKA_PACK_NAME, KAFKA_PACK)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pack_loads() {
        let groups = super::kafka().unwrap();
        assert!(groups.iter().map(|g| g.rules.len()).sum::<usize>() >= 3);
    }
}
