//! The link to the probe, behind a small trait so the pipeline runs the same on a board's UART/USB
//! port, on a pseudo-terminal in tests, or on anything else that reads and writes bytes.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

/// The two directions of an open link. Reads time out (returning `ErrorKind::TimedOut` or
/// `WouldBlock`) so the receiver can notice a quiet probe.
pub struct LinkHalves {
    /// Bytes from the probe.
    pub reader: Box<dyn Read + Send>,
    /// Bytes to the probe.
    pub writer: Box<dyn Write + Send>,
}

/// Something that can (re)open the link to the probe.
pub trait LinkOpener: Send + Sync {
    /// Opens the link; called again after the link failed (the probe was unplugged).
    fn open(&self) -> io::Result<LinkHalves>;
    /// For status messages.
    fn describe(&self) -> String;
}

/// A serial device (`/dev/ttyACM0`, `/dev/ttyUSB0`, a udev alias such as `/dev/cdnet-probe`, or a
/// pseudo-terminal). The baud rate matters for a UART and is ignored by USB CDC and ptys.
#[derive(Debug, Clone)]
pub struct SerialLink {
    /// Device path.
    pub path: PathBuf,
    /// Baud rate.
    pub baud: u32,
}

impl LinkOpener for SerialLink {
    fn open(&self) -> io::Result<LinkHalves> {
        let path = self.path.to_string_lossy();
        let port = serialport::new(path.as_ref(), self.baud)
            .timeout(Duration::from_millis(100))
            .open_native()
            .map_err(|e| io::Error::other(format!("{}: {e}", self.path.display())))?;
        let writer = port.try_clone_native().map_err(|e| io::Error::other(e.to_string()))?;
        Ok(LinkHalves { reader: Box::new(port), writer: Box::new(writer) })
    }

    fn describe(&self) -> String {
        format!("{} at {} baud", self.path.display(), self.baud)
    }
}
