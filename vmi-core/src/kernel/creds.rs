//! Task credentials: both `struct cred` a task points to, and the `user_struct` behind
//! them.
//!
//! A task has objective credentials (`real_cred`, what others see when they act on it)
//! and subjective ones (`cred`, what it acts with; equal to `real_cred` except while
//! the kernel overrides them briefly). The kernel changes `cred.uid` only through
//! `set_user()` paths that also switch `cred.user` to that uid's `user_struct`, so a
//! `uid` that disagrees with `user->uid` was written directly.
//!
//! Fields used ([`CredLayout`]): `cred.uid`, `.gid`, `.suid`, `.sgid`, `.euid`,
//! `.egid`, `.fsuid`, `.fsgid`, `.user`, `user_struct.uid`, and `task_struct.cred`,
//! `.real_cred`.

use crate::addr::Va;
use crate::kernel::objects::is_kernel_va;
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

crate::kernel_layout! {
    /// Offsets into `struct cred` and `struct user_struct`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct CredLayout(p) {
        /// `cred.uid`
        pub uid: u64 = "cred" ["uid"],
        /// `cred.gid`
        pub gid: u64 = "cred" ["gid"],
        /// `cred.suid`
        pub suid: u64 = "cred" ["suid"],
        /// `cred.sgid`
        pub sgid: u64 = "cred" ["sgid"],
        /// `cred.euid`
        pub euid: u64 = "cred" ["euid"],
        /// `cred.egid`
        pub egid: u64 = "cred" ["egid"],
        /// `cred.fsuid`
        pub fsuid: u64 = "cred" ["fsuid"],
        /// `cred.fsgid`
        pub fsgid: u64 = "cred" ["fsgid"],
        /// `cred.user`
        pub user: u64 = "cred" ["user"],
        /// `user_struct.uid`
        pub user_uid: u64 = "user_struct" ["uid"],
    }
    // the credentials of the kernel's own tasks (the detector's credential check)
    symbols [
        ["init_cred"],
    ]
}

impl CredLayout {
    /// `cred.uid`, `gid`, `suid`, `sgid`, `euid`, `egid`, `fsuid`, `fsgid` in that order.
    pub fn ids(&self) -> [u64; 8] {
        [
            self.uid, self.gid, self.suid, self.sgid, self.euid, self.egid, self.fsuid, self.fsgid,
        ]
    }
}

/// The ids of one `struct cred`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredIds {
    /// The `struct cred`.
    pub addr: Va,
    /// Real user id.
    pub uid: u32,
    /// Real group id.
    pub gid: u32,
    /// Saved user id.
    pub suid: u32,
    /// Saved group id.
    pub sgid: u32,
    /// Effective user id.
    pub euid: u32,
    /// Effective group id.
    pub egid: u32,
    /// File-system user id.
    pub fsuid: u32,
    /// File-system group id.
    pub fsgid: u32,
    /// `cred.user`.
    pub user: Va,
    /// `cred.user->uid`.
    pub user_uid: u32,
}

impl CredIds {
    /// True when any user id is 0.
    pub fn any_root(&self) -> bool {
        self.uid == 0 || self.euid == 0 || self.suid == 0 || self.fsuid == 0
    }
}

/// A task's two sets of credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskCreds {
    /// The task.
    pub task: Va,
    /// `task_struct.real_cred` (objective).
    pub real: CredIds,
    /// `task_struct.cred` (subjective).
    pub subjective: CredIds,
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The credentials of `task`.
    pub fn task_creds(&self, task: Va) -> Result<TaskCreds, KernelError> {
        let cl = CredLayout::from_profile(&self.profile)?;
        let l = self.layout;
        let ptr = |off: u64, what: &'static str| -> Result<Va, KernelError> {
            let v = self
                .space
                .read_u64(Va(task.0.wrapping_add(off)))
                .map_err(|source| KernelError::Read { what, source })?;
            if is_kernel_va(v) {
                Ok(Va(v))
            } else {
                Err(KernelError::BadPointer { what, value: v })
            }
        };
        let real = ptr(l.task_real_cred, "task_struct.real_cred")?;
        let subj = ptr(l.task_cred, "task_struct.cred")?;
        let real = self.cred_ids(real, &cl)?;
        let subjective = if subj == real.addr {
            real
        } else {
            self.cred_ids(subj, &cl)?
        };
        Ok(TaskCreds {
            task,
            real,
            subjective,
        })
    }

    /// The ids of the `struct cred` at `addr`.
    pub fn cred_ids(&self, addr: Va, cl: &CredLayout) -> Result<CredIds, KernelError> {
        let lo = cl.ids().iter().copied().min().unwrap_or(0).min(cl.user);
        let hi = cl
            .ids()
            .iter()
            .map(|o| o + 4)
            .max()
            .unwrap_or(0)
            .max(cl.user + 8);
        if hi - lo > 4096 {
            return Err(KernelError::MissingField(
                "cred: the ids and user are more than a page apart, not a cred layout".into(),
            ));
        }
        let mut buf = vec![0u8; (hi - lo) as usize];
        self.space
            .read_virt(Va(addr.0.wrapping_add(lo)), &mut buf)
            .map_err(|source| KernelError::Read {
                what: "struct cred",
                source,
            })?;
        let at = |off: u64| {
            let o = (off - lo) as usize;
            u32::from_le_bytes(buf[o..o + 4].try_into().unwrap_or([0; 4]))
        };
        let uo = (cl.user - lo) as usize;
        let user = u64::from_le_bytes(buf[uo..uo + 8].try_into().unwrap_or([0; 8]));
        if !is_kernel_va(user) {
            return Err(KernelError::BadPointer {
                what: "cred.user",
                value: user,
            });
        }
        let user_uid = self
            .space
            .read_u32(Va(user.wrapping_add(cl.user_uid)))
            .map_err(|source| KernelError::Read {
                what: "cred.user->uid",
                source,
            })?;
        let [uid, gid, suid, sgid, euid, egid, fsuid, fsgid] = cl.ids().map(at);
        Ok(CredIds {
            addr,
            uid,
            gid,
            suid,
            sgid,
            euid,
            egid,
            fsuid,
            fsgid,
            user: Va(user),
            user_uid,
        })
    }
}
