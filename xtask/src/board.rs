//! The boards we ship to: target triple and CPU tuning.

/// One supported board.
#[derive(Debug, Clone, Copy)]
pub struct Board {
    /// Name on the command line.
    pub name: &'static str,
    /// Rust target triple.
    pub target: &'static str,
    /// `-C target-cpu` for the board's cores (tract's hot loops are hand-written NEON either way;
    /// this tunes our own pre- and post-processing).
    pub cpu: &'static str,
    /// What it is and which OS image it expects.
    pub about: &'static str,
}

/// Every supported board.
pub const BOARDS: &[Board] = &[
    Board {
        name: "jetson-orin",
        target: "aarch64-unknown-linux-gnu",
        cpu: "cortex-a78ae",
        about: "NVIDIA Jetson Orin Nano/NX/AGX, JetPack 6 (Ubuntu 22.04, glibc 2.35)",
    },
    Board {
        name: "jetson-nano",
        // JetPack 4 ships glibc 2.27, older than Debian's cross sysroot: link statically with musl.
        target: "aarch64-unknown-linux-musl",
        cpu: "cortex-a57",
        about: "NVIDIA Jetson Nano/TX2, JetPack 4 (Ubuntu 18.04): static musl build",
    },
    Board {
        name: "rpi4",
        target: "aarch64-unknown-linux-gnu",
        cpu: "cortex-a72",
        about: "Raspberry Pi 4, 64-bit Raspberry Pi OS bookworm",
    },
    Board {
        name: "rpi5",
        target: "aarch64-unknown-linux-gnu",
        cpu: "cortex-a76",
        about: "Raspberry Pi 5, 64-bit Raspberry Pi OS bookworm",
    },
    Board {
        name: "x86_64",
        target: "x86_64-unknown-linux-gnu",
        cpu: "x86-64-v2",
        about: "x86-64 Linux (mini PC, or a test host)",
    },
];

/// Looks a board up by name.
pub fn find(name: &str) -> anyhow::Result<Board> {
    BOARDS.iter().copied().find(|b| b.name == name).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown board {name:?}; supported: {}",
            BOARDS.iter().map(|b| b.name).collect::<Vec<_>>().join(", ")
        )
    })
}
