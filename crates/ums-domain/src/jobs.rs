//! Kinds and states of jobs sent to devices.

use std::fmt;
use std::str::FromStr;

use crate::validate::ValidationError;

/// What a job asks a device to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Reboot the device.
    Reboot,
    /// Fetch and apply the effective settings.
    ApplySettings,
}

impl JobKind {
    /// All kinds.
    pub const ALL: [JobKind; 2] = [JobKind::Reboot, JobKind::ApplySettings];

    /// Stable text form: `"reboot"` or `"apply_settings"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobKind::Reboot => "reboot",
            JobKind::ApplySettings => "apply_settings",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobKind {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                ValidationError(format!(
                    "unknown job kind `{s}` (expected one of: reboot, apply_settings)"
                ))
            })
    }
}

/// Lifecycle state of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Created, not yet delivered.
    Pending,
    /// Delivered to the device.
    Sent,
    /// Completed successfully.
    Done,
    /// Failed.
    Failed,
}

impl JobState {
    /// All states.
    pub const ALL: [JobState; 4] = [
        JobState::Pending,
        JobState::Sent,
        JobState::Done,
        JobState::Failed,
    ];

    /// Stable text form: `"pending"`, `"sent"`, `"done"` or `"failed"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Sent => "sent",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                ValidationError(format!(
                    "unknown job state `{s}` (expected one of: pending, sent, done, failed)"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for kind in JobKind::ALL {
            assert_eq!(kind.as_str().parse::<JobKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        }
        assert_eq!(JobKind::ApplySettings.as_str(), "apply_settings");
    }

    #[test]
    fn unknown_values_are_rejected() {
        let err = "shutdown".parse::<JobKind>().expect_err("unknown kind");
        assert_eq!(
            err.to_string(),
            "unknown job kind `shutdown` (expected one of: reboot, apply_settings)"
        );
        assert!("Done".parse::<JobState>().is_err());
    }
}
