"""What every long-running ampd process shares: signal handling and HTTP serving."""
