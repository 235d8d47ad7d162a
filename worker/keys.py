"""Which S3 keys a job may write: its output key, confined; its state, under ``jobs/{jobId}/``."""

from __future__ import annotations

from dataclasses import dataclass

from worker.errors import OutputTaken

OUTPUT_FOLDERS = {"UPSCALE": "upscaled", "CAPTION_RENDER": "captioned", "VISUALIZE": "visualized"}
"""Task type → the folder and suffix of its default output key (spec §5)."""


def default_output_key(task_type: str, job_id: str, stem: str, root: str = "processed/") -> str:
    """``{root}{folder}/{jobId}/{stem}_{folder}.mp4``."""
    folder = OUTPUT_FOLDERS.get(task_type.upper(), task_type.lower())
    return f"{root}{folder}/{job_id}/{stem}_{folder}.mp4"


@dataclass(frozen=True)
class KeyPolicy:
    """Where outputs may go (``output_prefixes``, each ending in ``/``) and where job state lives.

    The first output prefix is the root of the default keys.
    """

    output_prefixes: tuple[str, ...] = ("processed/",)
    jobs_prefix: str = "jobs/"

    def state_prefix(self, job_id: str) -> str:
        """``jobs/{jobId}/``: everything the fleet knows about a job, found from its id alone."""
        return f"{self.jobs_prefix}{job_id}/"

    def output_key(self, task_type: str, job_id: str, stem: str, requested: str | None) -> str:
        """The job's output key: the requested one if the job may write it, else the default."""
        if not requested:
            return default_output_key(task_type, job_id, stem, self.output_prefixes[0])
        self.check_output(requested, job_id)
        return requested

    def check_output(self, key: str, job_id: str, sources: tuple[str, ...] = ()) -> None:
        """Raise :class:`OutputTaken` (INPUT_INVALID) unless ``key`` is one this job may write.

        Refused: outside the output prefixes, under the jobs prefix, equal to a
        source or attachment key, or inside another job's default output folder.
        """
        if key.startswith(self.jobs_prefix):
            raise OutputTaken(f"outputS3Key {key!r} lies under the job state prefix {self.jobs_prefix!r}")
        if key in sources:
            raise OutputTaken(f"outputS3Key {key!r} is one of the job's own inputs")
        root = next((prefix for prefix in self.output_prefixes if key.startswith(prefix)), None)
        if root is None:
            allowed = ", ".join(self.output_prefixes)
            raise OutputTaken(f"outputS3Key {key!r} is outside the output prefixes ({allowed})")
        for folder in OUTPUT_FOLDERS.values():
            base = f"{self.output_prefixes[0]}{folder}/"
            owner, slash, _ = key[len(base) :].partition("/")
            if key.startswith(base) and slash and owner != job_id:
                raise OutputTaken(f"outputS3Key {key!r} lies in another job's output folder")
