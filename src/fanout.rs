//! A worker's subscriber lists: which of its connections wait on which
//! mailbox. Node-local for every store backend; the store only counts them
//! per worker. Adding and removing are O(1) (each subscription remembers its
//! slot), and a delivery copies the keys into a buffer the worker reuses,
//! so fan-out allocates nothing per subscriber.

use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct Subscribers {
    lists: HashMap<Arc<str>, Vec<u32>>,
}

impl Subscribers {
    /// Adds connection `key` to `name`'s list: returns the shared name and
    /// the slot the subscription must remember.
    pub fn add(&mut self, name: &str, key: usize) -> (Arc<str>, u32) {
        let mailbox = match self.lists.get_key_value(name) {
            Some((mailbox, _)) => mailbox.clone(),
            None => {
                let mailbox: Arc<str> = Arc::from(name);
                self.lists.insert(mailbox.clone(), Vec::new());
                mailbox
            }
        };
        let list = self.lists.get_mut(name).expect("present");
        list.push(key as u32);
        (mailbox, (list.len() - 1) as u32)
    }

    /// Removes the connection at `slot` of `name`'s list. Returns the key
    /// that moved into `slot` (its subscription must learn its new slot).
    pub fn remove(&mut self, name: &str, slot: u32, key: usize) -> Option<u32> {
        let list = self.lists.get_mut(name)?;
        let slot = slot as usize;
        debug_assert_eq!(list[slot], key as u32, "a subscription knows its slot");
        list.swap_remove(slot);
        let moved = list.get(slot).copied();
        if list.is_empty() {
            self.lists.remove(name);
        }
        moved
    }

    /// Copies the keys subscribed to `name` into `out` (cleared first).
    pub fn keys_into(&self, name: &str, out: &mut Vec<u32>) -> bool {
        out.clear();
        match self.lists.get(name) {
            Some(list) => {
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
        let (_, a) = subs.add("box", 10);
        let (_, b) = subs.add("box", 11);
        let (_, c) = subs.add("box", 12);
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
}
