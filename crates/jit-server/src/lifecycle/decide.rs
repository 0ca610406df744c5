//! The one decision a revoke makes about the provider: remove the assignment, or keep it. Pure,
//! so every case is a unit test; the lifecycle gathers the facts and acts on the answer.

/// What this system has recorded about a principal's assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Nothing recorded.
    None,
    /// A grant of ours made it.
    Ours,
    /// The user held it before any grant of ours: never removed.
    Standing,
}

impl Record {
    /// From the store's `get_assignment` (`Some(standing)`).
    pub fn from_store(r: Option<bool>) -> Self {
        match r {
            None => Self::None,
            Some(false) => Self::Ours,
            Some(true) => Self::Standing,
        }
    }
}

/// Why an assignment stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Another grant of ours for the same user, account and permission set still runs.
    OtherGrant,
    /// It is a standing assignment.
    Standing,
    /// Nothing of ours is there to remove.
    NotOurs,
}

/// Remove, or keep and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Call the provider's revoke.
    Remove,
    /// Leave it.
    Keep(Keep),
}

/// A grant ended (expired, revoked, or failed after granting): remove the assignment unless
/// another running grant shares it (`covered`) or it is standing. With no record the removal
/// still happens: revoking what is already gone succeeds, and keeping access by mistake is the
/// failure that matters.
pub fn on_end(record: Record, covered: bool) -> Decision {
    match (record, covered) {
        (_, true) => Decision::Keep(Keep::OtherGrant),
        (Record::Standing, false) => Decision::Keep(Keep::Standing),
        (Record::Ours | Record::None, false) => Decision::Remove,
    }
}

/// A request was withdrawn before its grant completed. Remove what an earlier attempt may have
/// made: a recorded grant of ours, or, with no record, any attempt after the first (the
/// provider may have done its part and then timed out). Never a standing assignment, never one
/// another running grant shares.
pub fn on_withdrawn(record: Record, covered: bool, attempts: i64) -> Decision {
    let maybe_ours = match record {
        Record::Ours => true,
        Record::None => attempts > 1,
        Record::Standing => return Decision::Keep(Keep::Standing),
    };
    match (maybe_ours, covered) {
        (_, true) => Decision::Keep(Keep::OtherGrant),
        (false, false) => Decision::Keep(Keep::NotOurs),
        (true, false) => Decision::Remove,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_grant_removes_only_what_nothing_else_needs() {
        use Decision::*;
        assert_eq!(on_end(Record::Ours, false), Remove);
        assert_eq!(on_end(Record::None, false), Remove);
        assert_eq!(on_end(Record::Ours, true), Keep(super::Keep::OtherGrant));
        assert_eq!(on_end(Record::None, true), Keep(super::Keep::OtherGrant));
        assert_eq!(on_end(Record::Standing, false), Keep(super::Keep::Standing));
        assert_eq!(
            on_end(Record::Standing, true),
            Keep(super::Keep::OtherGrant)
        );
    }

    #[test]
    fn a_withdrawn_request_removes_what_an_attempt_may_have_made() {
        use Decision::*;
        assert_eq!(on_withdrawn(Record::Ours, false, 1), Remove);
        assert_eq!(on_withdrawn(Record::None, false, 2), Remove);
        assert_eq!(
            on_withdrawn(Record::None, false, 1),
            Keep(super::Keep::NotOurs),
            "a first attempt that never ran made nothing"
        );
        assert_eq!(
            on_withdrawn(Record::Ours, true, 3),
            Keep(super::Keep::OtherGrant)
        );
        assert_eq!(
            on_withdrawn(Record::Standing, false, 5),
            Keep(super::Keep::Standing)
        );
    }

    #[test]
    fn store_records_map_one_to_one() {
        assert_eq!(Record::from_store(None), Record::None);
        assert_eq!(Record::from_store(Some(false)), Record::Ours);
        assert_eq!(Record::from_store(Some(true)), Record::Standing);
    }
}
