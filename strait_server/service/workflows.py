"""Workflow definitions: create, update (a new version only when the definition changed), delete; the jobs
and workflows a definition names must exist in the project when it is written."""

from __future__ import annotations

from strait_server.errors import Violations
from strait_server.store.workflows import Attributes, StoredWorkflow, WorkflowStore
from strait_server.workflows.checks import Definition


class Workflows:
    def __init__(self, store: WorkflowStore) -> None:
        self._store = store

    async def create(self, project_id: str, attributes: Attributes, definition: Definition) -> StoredWorkflow:
        await self._require_targets(project_id, definition, own_slug=attributes.slug)
        return await self._store.create(project_id, attributes, definition.document, definition.digest)

    async def update(self, current: StoredWorkflow, attributes: Attributes, definition: Definition, *,
                     etag: str) -> StoredWorkflow:
        await self._require_targets(current.project_id, definition, own_slug=current.attributes.slug)
        return await self._store.update(current, attributes, definition.document, definition.digest, etag=etag)

    async def validate(self, project_id: str, definition: Definition, own_slug: str) -> None:
        await self._require_targets(project_id, definition, own_slug=own_slug)

    async def _require_targets(self, project_id: str, definition: Definition, *, own_slug: str) -> None:
        """INVALID_ARGUMENT for a job or workflow the definition names that the project does not have."""
        v = Violations()
        if definition.jobs:
            ids, slugs = await self._store.existing_jobs(
                project_id, [j.id for j in definition.jobs if j.id], [j.slug for j in definition.jobs if j.slug])
            for ref in definition.jobs:
                if (ref.id and ref.id not in ids) or (ref.slug and ref.slug not in slugs):
                    v.add(f"{ref.path}.{'job_id' if ref.id else 'job_slug'}",
                          f"no job {ref.id or ref.slug!r} in this project")
        for ref in definition.sub_workflows:
            if ref.slug == own_slug:
                continue  # itself: allowed, the nesting depth bounds it
            if not await self._store.exists(project_id, workflow_id=ref.id, slug=ref.slug):
                v.add(f"{ref.path}.{'workflow_id' if ref.id else 'workflow_slug'}",
                      f"no workflow {ref.id or ref.slug!r} in this project")
        v.raise_if_any()
