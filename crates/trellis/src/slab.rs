//! A minimal slab: stable `usize` keys into a vector, with a free list.
//!
//! Used for a cancel node's waiters and children, where entries come and go at a high rate and
//! each owner remembers its key so that removal is O(1).

#[derive(Debug)]
pub(crate) struct Slab<T> {
    entries: Vec<Entry<T>>,
    next_free: usize,
    len: usize,
}

#[derive(Debug)]
enum Entry<T> {
    Occupied(T),
    /// Vacant, linking to the next vacant entry (or `entries.len()` when it is the last).
    Vacant(usize),
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            next_free: 0,
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    pub(crate) fn insert(&mut self, value: T) -> usize {
        let key = self.next_free;
        if key == self.entries.len() {
            self.entries.push(Entry::Occupied(value));
            self.next_free = key + 1;
        } else {
            match std::mem::replace(&mut self.entries[key], Entry::Occupied(value)) {
                Entry::Vacant(next) => self.next_free = next,
                Entry::Occupied(_) => unreachable!("free list points at an occupied entry"),
            }
        }
        self.len += 1;
        key
    }

    pub(crate) fn remove(&mut self, key: usize) -> Option<T> {
        let entry = self.entries.get_mut(key)?;
        if matches!(entry, Entry::Vacant(_)) {
            return None;
        }
        let Entry::Occupied(value) = std::mem::replace(entry, Entry::Vacant(self.next_free)) else {
            unreachable!()
        };
        self.next_free = key;
        self.len -= 1;
        if self.len == 0 {
            // Give memory back after a burst (10,000 waiters, then none).
            self.entries.clear();
            self.entries.shrink_to(64);
            self.next_free = 0;
        }
        Some(value)
    }

    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        match self.entries.get_mut(key) {
            Some(Entry::Occupied(v)) => Some(v),
            _ => None,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Clones occupied values from index `from` on into `out` until it holds `max` values;
    /// returns the index to continue from.
    pub(crate) fn clone_from_index(&self, from: usize, max: usize, out: &mut Vec<T>) -> usize
    where
        T: Clone,
    {
        let mut index = from;
        while index < self.entries.len() && out.len() < max {
            if let Entry::Occupied(value) = &self.entries[index] {
                out.push(value.clone());
            }
            index += 1;
        }
        index
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.entries.iter_mut().filter_map(|e| match e {
            Entry::Occupied(v) => Some(v),
            Entry::Vacant(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Slab;

    #[test]
    fn keys_are_reused_and_stable() {
        let mut s = Slab::default();
        let a = s.insert('a');
        let b = s.insert('b');
        let c = s.insert('c');
        assert_eq!(s.remove(b), Some('b'));
        assert_eq!(s.remove(b), None);
        let d = s.insert('d');
        assert_eq!(d, b);
        assert_eq!(s.get_mut(a), Some(&mut 'a'));
        assert_eq!(s.get_mut(c), Some(&mut 'c'));
        assert_eq!(s.iter_mut().count(), 3);
        s.remove(a);
        s.remove(c);
        s.remove(d);
        assert!(s.is_empty());
        assert_eq!(s.insert('e'), 0);
    }
}
