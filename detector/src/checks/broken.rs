//! Findings for kernel structures a walk found broken: a list that loops or leads out
//! of the kernel, an object no kernel would build. One written pointer must not switch
//! a check off silently: the break is itself a high finding that says where it is, and
//! the checks go on with what the other views and the rest of the list hold.

use vmi_core::kernel::{KernelError, ListBreak};

use crate::finding::{Finding, Severity};

/// The finding for `b`, a break in a list the check `check` walks; `element` names
/// the element (or list head) whose link is bad.
pub(crate) fn list_break(check: &'static str, b: &ListBreak, element: &str) -> Finding {
    let link = b.direction.link();
    let summary = match &b.cause {
        KernelError::TooLong { max, .. } => format!(
            "the kernel list {} holds more than {max} elements: the walk stopped at {element} (raise the limit if the guest really has that many)",
            b.list
        ),
        cause => format!(
            "the kernel list {} is broken: {element}'s {link} {} after {} elements; what lies beyond was read from the list's other end and the kernel's other views",
            b.list,
            cause_text(cause),
            b.after
        ),
    };
    Finding::new(
        check,
        Severity::High,
        format!("{check}:broken:{}:{link}:{:#x}", b.list, b.from.0),
        summary,
    )
    .text("list", b.list)
    .text("link", link)
    .addr("at", b.from.0)
    .num("after", b.after as u64)
    .text("cause", b.cause.to_string())
}

/// What a broken link holds, as the end of a sentence.
fn cause_text(e: &KernelError) -> String {
    match e {
        KernelError::BadPointer { value, .. } => {
            format!("is {value:#x}, not a kernel address")
        }
        KernelError::Cycle { at, .. } => format!("leads back to {at}, seen before: a loop"),
        KernelError::Read { source, .. } => format!("cannot be followed ({source})"),
        other => format!("is unusable ({other})"),
    }
}

/// Is `e` evidence that guest memory holds something no kernel writes (a loop, a
/// pointer out of the kernel, an impossible object), rather than a read that failed
/// or a profile that lacks something?
pub(crate) fn is_manipulation(e: &KernelError) -> bool {
    matches!(
        e,
        KernelError::Cycle { .. } | KernelError::BadPointer { .. } | KernelError::Corrupt { .. }
    )
}

/// The finding for a check that stopped at `e`, a structure it reads found corrupted
/// (see [`is_manipulation`]): the check's own findings are lost, so this one is high.
pub(crate) fn check_stopped(check: &'static str, e: &KernelError) -> Finding {
    let what = match e {
        KernelError::Cycle { what, .. } | KernelError::BadPointer { what, .. } => {
            (*what).to_string()
        }
        KernelError::Corrupt { what, .. } => what.clone(),
        _ => String::new(),
    };
    Finding::new(
        check,
        Severity::High,
        format!("{check}:broken:{what}"),
        format!("{check} could not finish: {e}; whatever hides behind it is not checked"),
    )
    .text("structure", what)
    .text("cause", e.to_string())
}
