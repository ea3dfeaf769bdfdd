//! The customer sshd's login shell for container users: see `ssh_session::enter`.

fn main() {
    ssh_session::enter::main()
}
