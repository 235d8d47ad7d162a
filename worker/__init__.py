"""The vidworker daemon: SQS in, tasks run, S3 out, callbacks to the backend."""
