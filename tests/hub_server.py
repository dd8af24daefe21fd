"""A small Hub-compatible server for the tests: the part of huggingface.co's HTTP API that push, download,
snapshot and Space deploy use, kept in memory. The real huggingface_hub client talks to it through HF_ENDPOINT."""

import base64
import hashlib
import json
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response


class Repo:
    def __init__(self, private: bool, sdk: str | None):
        self.private, self.sdk = private, sdk
        self.commits: dict[str, dict[str, bytes]] = {}
        self.branches: dict[str, str] = {}
        self.variables: dict[str, str] = {}
        self.secrets: dict[str, str] = {}
        self.commit("main", {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"})

    def commit(self, branch: str, files: dict[str, bytes]) -> str:
        sha = hashlib.sha1(
            json.dumps(sorted((k, hashlib.sha1(v).hexdigest()) for k, v in files.items())).encode()
            + str(len(self.commits)).encode()
        ).hexdigest()
        self.commits[sha] = files
        self.branches[branch] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        return self.branches.get(revision) or (revision if revision in self.commits else None)


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"X-Error-Code": code})


def make_app() -> tuple[FastAPI, dict]:
    app = FastAPI()
    repos: dict[tuple[str, str], Repo] = {}

    def authorized(request: Request) -> bool:
        return request.headers.get("authorization", "").startswith("Bearer ")

    def find(kind: str, repo_id: str, revision: str | None = None, request: Request | None = None):
        repo = repos.get((kind, repo_id))
        if repo is None or (repo.private and request is not None and not authorized(request)):
            return None, None, error(401 if repo else 404, "RepoNotFound", f"Repository Not Found for url: {repo_id}")
        sha = repo.resolve(revision) if revision else None
        if revision and sha is None:
            return repo, None, error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo, sha, None

    @app.post("/api/repos/create")
    async def create(request: Request):
        if not authorized(request):
            return error(401, "Unauthorized", "Invalid credentials in Authorization header")
        body = await request.json()
        kind = body.get("type") or "model"
        repo_id = f"{body['organization']}/{body['name']}"
        url = f"{request.base_url}{'spaces/' if kind == 'space' else ''}{repo_id}"
        if (kind, repo_id) in repos:
            return JSONResponse({"error": "You already created this repo", "url": url}, status_code=409)
        repos[(kind, repo_id)] = Repo(
            body.get("visibility") == "private" or body.get("private", False), body.get("sdk")
        )
        return {"url": url, "name": repo_id}

    @app.post("/api/validate-yaml")
    async def validate_yaml():
        return {"errors": [], "warnings": []}

    @app.post("/api/{kind}s/{ns}/{name}/preupload/{revision:path}")
    async def preupload(kind: str, ns: str, name: str, revision: str, request: Request):
        body = await request.json()
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in body["files"]]
        return {"files": files}

    @app.post("/api/{kind}s/{ns}/{name}/branch/{branch:path}")
    async def create_branch(kind: str, ns: str, name: str, branch: str, request: Request):
        repo, _, failure = find(kind, f"{ns}/{name}")
        if failure:
            return failure
        if branch in repo.branches:
            return JSONResponse({"error": "Reference already exists"}, status_code=409)
        repo.branches[branch] = repo.branches["main"]
        return {}

    @app.post("/api/{kind}s/{ns}/{name}/commit/{revision:path}")
    async def commit(kind: str, ns: str, name: str, revision: str, request: Request):
        if not authorized(request):
            return error(401, "Unauthorized", "Invalid credentials in Authorization header")
        repo, sha, failure = find(kind, f"{ns}/{name}", revision)
        if failure:
            return failure
        files = dict(repo.commits[sha])
        for line in (await request.body()).decode().splitlines():
            op = json.loads(line)
            if op["key"] == "file":
                files[op["value"]["path"]] = base64.b64decode(op["value"]["content"])
            elif op["key"] == "deletedFile":
                files.pop(op["value"]["path"], None)
            elif op["key"] != "header":
                return error(400, "BadRequest", f"unsupported operation {op['key']}")
        new = repo.commit(revision, files)
        prefix = "spaces/" if kind == "space" else ""
        return {"commitUrl": f"{request.base_url}{prefix}{ns}/{name}/commit/{new}", "commitOid": new}

    @app.get("/api/{kind}s/{ns}/{name}")
    async def info(kind: str, ns: str, name: str, request: Request):
        return await revision_info(kind, ns, name, "main", request)

    @app.get("/api/{kind}s/{ns}/{name}/revision/{revision:path}")
    async def revision_info(kind: str, ns: str, name: str, revision: str, request: Request):
        repo, sha, failure = find(kind, f"{ns}/{name}", revision, request)
        if failure:
            return failure
        siblings = [{"rfilename": path} for path in sorted(repo.commits[sha])]
        return {"id": f"{ns}/{name}", "sha": sha, "siblings": siblings, "private": repo.private}

    @app.get("/api/{kind}s/{ns}/{name}/tree/{revision}")
    @app.get("/api/{kind}s/{ns}/{name}/tree/{revision}/{folder:path}")
    async def tree(kind: str, ns: str, name: str, revision: str, request: Request, folder: str = ""):
        """The files under a folder (all of them, or with recursive=false its files and its folders)."""
        repo, sha, failure = find(kind, f"{ns}/{name}", revision, request)
        if failure:
            return failure
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        inside = {p: b for p, b in repo.commits[sha].items() if p.startswith(prefix)}
        if not inside:
            return error(404, "EntryNotFound", f"{folder} does not exist at {revision}")
        entries, folders = [], set()
        for p, b in sorted(inside.items()):
            rest = p[len(prefix) :]
            if "/" in rest and request.query_params.get("recursive") == "false":
                folders.add(prefix + rest.split("/")[0])
                continue
            entries.append({"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()})
        return [{"type": "directory", "path": f, "oid": "0" * 40} for f in sorted(folders)] + entries

    @app.post("/api/spaces/{ns}/{name}/variables")
    async def variables(ns: str, name: str, request: Request):
        repo, _, failure = find("space", f"{ns}/{name}")
        if failure:
            return failure
        body = await request.json()
        repo.variables[body["key"]] = body["value"]
        return {k: {"value": v, "updatedAt": "2026-11-22T00:00:00.000Z"} for k, v in repo.variables.items()}

    @app.post("/api/spaces/{ns}/{name}/secrets")
    async def secrets(ns: str, name: str, request: Request):
        repo, _, failure = find("space", f"{ns}/{name}", None, request)
        if failure:
            return failure
        body = await request.json()
        repo.secrets[body["key"]] = body["value"]
        return {}

    def serve(kind: str, repo_id: str, revision: str, path: str, request: Request):
        repo, sha, failure = find(kind, repo_id, revision, request)
        if failure:
            return failure
        content = repo.commits[sha].get(path)
        if content is None:
            return error(404, "EntryNotFound", f"{path} does not exist at {revision}")
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{hashlib.sha1(content).hexdigest()}"',
            "Content-Length": str(len(content)),
        }
        body = b"" if request.method == "HEAD" else content
        return Response(body, headers=headers, media_type="application/octet-stream")

    @app.api_route("/{kind}s/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    async def resolve_space_or_dataset(kind: str, ns: str, name: str, revision: str, path: str, request: Request):
        return serve(kind, f"{ns}/{name}", revision, path, request)

    @app.api_route("/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    async def resolve_model(ns: str, name: str, revision: str, path: str, request: Request):
        return serve("model", f"{ns}/{name}", revision, path, request)

    return app, repos


class HubServer:
    def __init__(self, port: int):
        self.app, self.repos = make_app()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "HubServer":
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def files(self, kind: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[(kind, repo_id)]
        return repo.commits[repo.resolve(revision)]
