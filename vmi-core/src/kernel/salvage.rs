//! Walking a damaged `list_head` list: forwards from the head to where it breaks, then
//! backwards (through `prev`) from the head to the same place, so that one corrupted
//! pointer hides nothing beyond it.
//!
//! A rootkit that writes one wild `next` into the tasks list (or makes it loop) would
//! otherwise switch off every walker of it. The salvage keeps each element reachable in
//! either direction and says where and how each direction broke ([`ListBreak`]); only
//! the elements between two breaks are lost, and other views (the pid IDR, the run
//! queues, the module kobjects) can still name them. Every walk is bounded (`max`
//! elements in all) and detects cycles.

use std::collections::HashSet;

use crate::addr::Va;
use crate::kernel::objects::is_kernel_va;
use crate::kernel::KernelError;
use crate::memory::VirtualMemory;

/// Which way a walk went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Through `next`.
    Forward,
    /// Through `prev`.
    Backward,
}

impl Direction {
    /// `next` or `prev`.
    pub fn link(self) -> &'static str {
        match self {
            Direction::Forward => "next",
            Direction::Backward => "prev",
        }
    }
}

/// Where and how a list walk broke.
#[derive(Debug)]
pub struct ListBreak {
    /// Which list (e.g. `init_task.tasks`).
    pub list: &'static str,
    /// The direction that broke.
    pub direction: Direction,
    /// The `list_head` whose link is bad (the list head itself, or an element's).
    pub from: Va,
    /// Elements walked in this direction before the break.
    pub after: usize,
    /// What the link held: a pointer that is not a kernel address, an element seen
    /// before (a loop), one that could not be read, or one too many.
    pub cause: KernelError,
}

impl std::fmt::Display for ListBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} breaks at {}->{} after {} elements: {}",
            self.list,
            self.from,
            self.direction.link(),
            self.after,
            self.cause
        )
    }
}

/// What a salvaging walk found.
#[derive(Debug, Default)]
pub struct Salvaged {
    /// The elements' `list_head` addresses in list order: those reached forwards, then
    /// those reached backwards (the list's tail).
    pub nodes: Vec<Va>,
    /// How many of `nodes` were reached forwards.
    pub forward: usize,
    /// Where the walk broke (none for an intact list, at most one per direction).
    pub breaks: Vec<ListBreak>,
}

impl Salvaged {
    /// True when the list was walked from its head back to its head.
    pub fn is_whole(&self) -> bool {
        self.breaks.is_empty()
    }
}

/// Offset of `prev` in a `list_head`.
const PREV: u64 = 8;

/// Walk the list headed at `head` forwards, and where that breaks, backwards from the
/// head until the backward walk meets an element already seen or breaks too. At most
/// `max` elements are read in all; a list longer than that is a break of cause
/// [`KernelError::TooLong`].
pub fn salvage_list<V: VirtualMemory + ?Sized>(
    mem: &V,
    head: Va,
    list: &'static str,
    max: usize,
) -> Salvaged {
    let mut out = Salvaged::default();
    let mut ahead: HashSet<u64> = HashSet::new();
    let forward = Walk {
        mem,
        head,
        list,
        max,
        direction: Direction::Forward,
    };
    match forward.run(&mut ahead, &HashSet::new(), &mut out.nodes) {
        None => out.forward = out.nodes.len(),
        Some(b) if matches!(b.cause, KernelError::TooLong { .. }) => {
            // at the bound: nothing more is read
            out.breaks.push(b);
            out.forward = out.nodes.len();
        }
        Some(b) => {
            out.breaks.push(b);
            out.forward = out.nodes.len();
            let backward = Walk {
                direction: Direction::Backward,
                ..forward
            };
            let mut tail = Vec::new();
            if let Some(b) = backward.run(&mut HashSet::new(), &ahead, &mut tail) {
                out.breaks.push(b);
            }
            out.nodes.extend(tail.into_iter().rev());
        }
    }
    out
}

/// One direction of [`salvage_list`].
struct Walk<'m, V: ?Sized> {
    mem: &'m V,
    head: Va,
    list: &'static str,
    max: usize,
    direction: Direction,
}

impl<V: VirtualMemory + ?Sized> Walk<'_, V> {
    /// Walk into `nodes` (`seen` are its elements); `None` when it came back to the
    /// head or, going backwards, reached an element of `ahead` (the forward walk's),
    /// else where it broke.
    fn run(
        &self,
        seen: &mut HashSet<u64>,
        ahead: &HashSet<u64>,
        nodes: &mut Vec<Va>,
    ) -> Option<ListBreak> {
        let link = match self.direction {
            Direction::Forward => 0,
            Direction::Backward => PREV,
        };
        let mut from = self.head;
        loop {
            let broke = |cause| ListBreak {
                list: self.list,
                direction: self.direction,
                from,
                after: seen.len(),
                cause,
            };
            let node = match self.mem.read_u64(Va(from.0.wrapping_add(link))) {
                Ok(n) => n,
                Err(source) => {
                    return Some(broke(KernelError::Read {
                        what: self.list,
                        source,
                    }))
                }
            };
            if node == self.head.0 || ahead.contains(&node) {
                return None;
            }
            if !is_kernel_va(node) {
                return Some(broke(KernelError::BadPointer {
                    what: self.list,
                    value: node,
                }));
            }
            if seen.contains(&node) {
                return Some(broke(KernelError::Cycle {
                    what: self.list,
                    at: Va(node),
                    after: seen.len(),
                }));
            }
            if seen.len() + ahead.len() >= self.max {
                return Some(broke(KernelError::TooLong {
                    what: self.list,
                    max: self.max,
                }));
            }
            seen.insert(node);
            nodes.push(Va(node));
            from = Va(node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::objects::tests::Flat;

    const BASE: u64 = 0xffff_8880_0000_0000;

    /// A list of `n` elements at BASE + 0x100 * (i + 1), head at BASE.
    fn list(n: u64) -> Flat {
        let mut m = Flat::new(BASE, 0x100 * (n as usize + 2));
        let at = |i: u64| if i == 0 { BASE } else { BASE + 0x100 * i };
        for i in 0..=n {
            let next = at((i + 1) % (n + 1));
            let prev = at((i + n) % (n + 1));
            m.put(at(i), &next.to_le_bytes());
            m.put(at(i) + PREV, &prev.to_le_bytes());
        }
        m
    }

    fn nodes(s: &Salvaged) -> Vec<u64> {
        s.nodes.iter().map(|v| (v.0 - BASE) / 0x100).collect()
    }

    #[test]
    fn an_intact_list_is_walked_once_forwards() {
        let m = list(5);
        let s = salvage_list(&m, Va(BASE), "l", 100);
        assert!(s.is_whole());
        assert_eq!(nodes(&s), [1, 2, 3, 4, 5]);
        assert_eq!(s.forward, 5);
    }

    #[test]
    fn a_wild_next_loses_nothing_the_prev_links_reach() {
        let mut m = list(6);
        m.put(BASE + 0x300, &(0x4141_4141_4141_4141u64).to_le_bytes());
        let s = salvage_list(&m, Va(BASE), "l", 100);
        assert_eq!(nodes(&s), [1, 2, 3, 4, 5, 6]);
        assert_eq!(s.forward, 3);
        assert_eq!(s.breaks.len(), 1);
        let b = &s.breaks[0];
        assert_eq!(
            (b.direction, b.from, b.after),
            (Direction::Forward, Va(BASE + 0x300), 3)
        );
        assert!(matches!(
            b.cause,
            KernelError::BadPointer {
                value: 0x4141_4141_4141_4141,
                ..
            }
        ));
    }

    #[test]
    fn a_loop_is_a_break_and_the_tail_comes_backwards() {
        let mut m = list(6);
        // 4 -> 2: forwards 1 2 3 4 then 2 again
        m.put(BASE + 0x400, &(BASE + 0x200u64).to_le_bytes());
        let s = salvage_list(&m, Va(BASE), "l", 100);
        assert_eq!(nodes(&s), [1, 2, 3, 4, 5, 6]);
        assert!(matches!(
            s.breaks[0].cause,
            KernelError::Cycle { at, after: 4, .. } if at == Va(BASE + 0x200)
        ));
    }

    #[test]
    fn both_directions_broken_lose_only_the_middle() {
        let mut m = list(8);
        m.put(BASE + 0x200, &(0u64).to_le_bytes()); // 2->next
        m.put(BASE + 0x700 + PREV, &(0x10u64).to_le_bytes()); // 7->prev
        let s = salvage_list(&m, Va(BASE), "l", 100);
        assert_eq!(nodes(&s), [1, 2, 7, 8]);
        assert_eq!(s.breaks.len(), 2);
        assert_eq!(s.breaks[1].direction, Direction::Backward);
        assert_eq!(s.breaks[1].from, Va(BASE + 0x700));
    }

    #[test]
    fn an_unreadable_head_is_a_break_not_a_panic() {
        let m = list(2);
        let s = salvage_list(&m, Va(BASE + 0x10_0000), "l", 100);
        assert!(s.nodes.is_empty());
        assert_eq!(s.breaks.len(), 2);
        assert!(matches!(s.breaks[0].cause, KernelError::Read { .. }));
    }

    #[test]
    fn the_bound_holds_in_all() {
        let m = list(50);
        let s = salvage_list(&m, Va(BASE), "l", 10);
        assert_eq!(s.nodes.len(), 10);
        assert!(matches!(
            s.breaks[0].cause,
            KernelError::TooLong { max: 10, .. }
        ));
    }
}
