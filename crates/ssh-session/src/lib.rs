//! An ssh session inside a running container (issue 13).
//!
//! The customer sshd (Debian's OpenSSH, `vassals-examples/sshd_config`) authenticates a
//! container uid by the keys unbit-node-sync wrote for it (`crates/ssh-access`), then runs the
//! user's login shell, which is [`enter`] (`unbit-ssh-enter`), on the host, as the uid. It
//! asks the [`broker`] (`unbit-ssh-broker`, root, a child of the node Emperor) for a session;
//! the broker forks a [`session`] process that finds the container's pid 1 among the Emperor's
//! children, joins its cgroup and namespaces (`jail::enter`), and forks the customer's shell
//! or command inside, as the uid, with a terminal from the container's own devpts. Nothing
//! from the container runs before the privilege drop; nothing a customer can write chooses
//! the container or its namespaces. See docs/ssh.md.

pub mod broker;
pub mod enter;
pub mod protocol;
pub mod session;
