//! A worker's subscriber lists: which of its connections wait on which
//! mailbox. Node-local for every store backend; the store only counts them
//! per worker. Adding and removing are O(1) (each subscription remembers its
//! slot), and a delivery copies the keys into a buffer the worker reuses,
//! so fan-out allocates nothing per subscriber.

use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct Subscribers {
    /// Keyed by the store's own `Arc` of the name when it lends one, so a
    /// mailbox's name is allocated once for the store, this list and every
    /// subscription.
    lists: HashMap<Arc<str>, Keys>,
    /// Lists whose mailbox came down to one subscriber, kept for the next
    /// that grows: every delivery to a long-polled mailbox empties its list
    /// and the clients' next polls fill it again. Growing it from nothing
    /// each time took a dozen reallocations of up to the whole list, and
    /// the large ones made glibc consolidate its small free chunks
    /// (docs/BENCHMARKS.md, "Bayeux long-polling"). Boxed as `Keys::Many`
    /// holds them, so taking one back allocates nothing.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Vec<u32>>>,
}

/// Spare lists kept at most: a worker answers a few long-polled mailboxes
/// at a time; past this a list's memory goes back to the allocator.
const SPARE_LISTS: usize = 4;

/// A spare list longer than this is not kept (it returns to the allocator):
/// a list of this many keys costs 64 KiB, so a worker keeps 256 KiB at most.
const SPARE_MAX_CAPACITY: usize = 16 * 1024;

/// One mailbox's subscribers on this worker. Most mailboxes have a single
/// one (a user's own mailbox): it is kept inline, so such an entry costs no
/// allocation; longer lists are boxed so that every entry of the map stays
/// 16 bytes.
enum Keys {
    One(u32),
    /// Two or more; back to `One` when one is left.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<u32>>),
}

impl Keys {
    /// Appends `key`; returns its slot. A list that grows past one takes a
    /// spare's memory when there is one.
    #[allow(clippy::vec_box)]
    fn push(&mut self, key: u32, spare: &mut Vec<Box<Vec<u32>>>) -> u32 {
        match self {
            Keys::One(first) => {
                let mut list = spare.pop().unwrap_or_default();
                list.extend_from_slice(&[*first, key]);
                *self = Keys::Many(list);
                1
            }
            Keys::Many(list) => {
                list.push(key);
                (list.len() - 1) as u32
            }
        }
    }
}

impl Subscribers {
    /// Adds connection `key` to `name`'s list: returns the shared name and
    /// the slot the subscription must remember. `shared` is the store's
    /// `Arc` of the name, used for a new list instead of a copy.
    pub fn add(&mut self, name: &str, shared: Option<&Arc<str>>, key: usize) -> (Arc<str>, u32) {
        let key = key as u32;
        if let Some((mailbox, _)) = self.lists.get_key_value(name) {
            let mailbox = mailbox.clone();
            let slot = self
                .lists
                .get_mut(name)
                .expect("present")
                .push(key, &mut self.spare);
            return (mailbox, slot);
        }
        let mailbox = shared.cloned().unwrap_or_else(|| Arc::from(name));
        self.lists.insert(mailbox.clone(), Keys::One(key));
        (mailbox, 0)
    }

    /// Removes the connection at `slot` of `name`'s list. Returns the key
    /// that moved into `slot` (its subscription must learn its new slot).
    pub fn remove(&mut self, name: &str, slot: u32, key: usize) -> Option<u32> {
        let keys = self.lists.get_mut(name)?;
        let slot = slot as usize;
        match keys {
            Keys::One(only) => {
                debug_assert_eq!(
                    (*only, slot),
                    (key as u32, 0),
                    "a subscription knows its slot"
                );
                self.lists.remove(name);
                None
            }
            Keys::Many(list) => {
                debug_assert_eq!(list[slot], key as u32, "a subscription knows its slot");
                list.swap_remove(slot);
                let moved = list.get(slot).copied();
                if let [last] = list[..]
                    && let Keys::Many(mut list) = std::mem::replace(keys, Keys::One(last))
                    && self.spare.len() < SPARE_LISTS
                    && list.capacity() <= SPARE_MAX_CAPACITY
                {
                    list.clear();
                    self.spare.push(list);
                }
                moved
            }
        }
    }

    /// Copies the keys subscribed to `name` into `out` (cleared first).
    pub fn keys_into(&self, name: &str, out: &mut Vec<u32>) -> bool {
        out.clear();
        match self.lists.get(name) {
            Some(Keys::One(key)) => {
                out.push(*key);
                true
            }
            Some(Keys::Many(list)) => {
                out.extend_from_slice(list);
                true
            }
            None => false,
        }
    }

    pub fn mailbox_count(&self) -> usize {
        self.lists.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_reports_the_key_that_moved_into_the_slot() {
        let mut subs = Subscribers::default();
        let (_, a) = subs.add("box", None, 10);
        let (_, b) = subs.add("box", None, 11);
        let (_, c) = subs.add("box", None, 12);
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(subs.remove("box", a, 10), Some(12));
        let mut keys = Vec::new();
        assert!(subs.keys_into("box", &mut keys));
        assert_eq!(keys, vec![12, 11]);
        assert_eq!(subs.remove("box", 1, 11), None);
        assert_eq!(subs.remove("box", 0, 12), None);
        assert!(!subs.keys_into("box", &mut keys));
        assert_eq!(subs.mailbox_count(), 0);
    }

    #[test]
    fn a_list_that_empties_lends_its_memory_to_the_next_that_grows() {
        let mut subs = Subscribers::default();
        let slots: Vec<u32> = (0..100).map(|k| subs.add("box", None, k).1).collect();
        for (k, slot) in slots.iter().enumerate().rev() {
            subs.remove("box", *slot, k);
        }
        assert_eq!(subs.mailbox_count(), 0);
        assert_eq!(subs.spare.len(), 1, "the list of 100 is kept");
        let kept = subs.spare[0].capacity();
        assert!(kept >= 100);
        subs.add("other", None, 1);
        subs.add("other", None, 2);
        assert!(subs.spare.is_empty(), "the next list to grow took it");
        let Some(Keys::Many(list)) = subs.lists.get("other") else {
            panic!("two subscribers make a list")
        };
        assert_eq!((list.capacity(), &list[..]), (kept, &[1, 2][..]));
    }

    #[test]
    fn spare_lists_are_bounded_in_number_and_size() {
        let mut subs = Subscribers::default();
        let names: Vec<String> = (0..SPARE_LISTS + 3).map(|m| format!("box{m}")).collect();
        for name in &names {
            subs.add(name, None, 1);
            subs.add(name, None, 2);
        }
        for name in &names {
            subs.remove(name, 1, 2);
            subs.remove(name, 0, 1);
        }
        assert_eq!(subs.spare.len(), SPARE_LISTS);
        subs.spare.clear();
        let slots: Vec<u32> = (0..SPARE_MAX_CAPACITY + 1)
            .map(|k| subs.add("huge", None, k).1)
            .collect();
        for (k, slot) in slots.iter().enumerate().rev() {
            subs.remove("huge", *slot, k);
        }
        assert!(
            subs.spare.is_empty(),
            "a list past the cap goes back to the allocator"
        );
    }
}
