"""A small Ollama-API server for tests, backed by a local GGUF through llama-cpp-python.

No Ollama binary can be had where nasgraph is developed, so the Ollama backend is tested over real
HTTP against this server: /api/version, /api/tags, /api/ps, /api/chat (NDJSON streaming or one JSON
object, with prompt_eval_count/eval_count) and /api/generate (load/unload with keep_alive, or a
completion). Every request is recorded so tests can check what the client sent.
"""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class _NotFound(Exception):
    pass


class OllamaAPIServer:
    """Serve one GGUF under one Ollama model name on 127.0.0.1 (a free port) from a daemon thread."""

    def __init__(self, model_path: Path, name: str, *, n_ctx: int = 2048, threads: int = 2) -> None:
        self.model_path = Path(model_path)
        self.name = name
        self.n_ctx = n_ctx
        self.threads = threads
        self.requests: list[dict[str, Any]] = []
        self.size_vram = 0  # what /api/ps reports the loaded model holds on the GPU
        self._llm: Any = None
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"api": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="ollama-api", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
        self.unload()

    def __enter__(self) -> OllamaAPIServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- model ------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._llm is not None

    def load(self) -> Any:
        with self._lock:
            if self._llm is None:
                from llama_cpp import Llama

                self._llm = Llama(model_path=str(self.model_path), n_ctx=self.n_ctx, n_threads=self.threads,
                                  n_threads_batch=self.threads, n_gpu_layers=0, verbose=False)
            return self._llm

    def unload(self) -> None:
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None

    def _check_model(self, model: str | None) -> None:
        tagged = model if model and ":" in model else f"{model}:latest"
        if self.name not in (model, tagged):
            raise _NotFound(f'model "{model}" not found, try pulling it first')

    def tags(self) -> dict[str, Any]:
        size = self.model_path.stat().st_size
        entry = {"name": self.name, "model": self.name, "modified_at": _now(), "size": size,
                 "digest": "0" * 64, "details": {"format": "gguf", "family": "qwen2",
                                                 "parameter_size": "", "quantization_level": "Q4_K_M"}}
        return {"models": [entry]}

    def ps(self) -> dict[str, Any]:
        """Loaded models, with the GPU memory each holds (settable: this server runs on the CPU)."""
        if not self.loaded:
            return {"models": []}
        return {"models": [{**m, "size_vram": self.size_vram, "expires_at": _now()} for m in self.tags()["models"]]}

    # --- generation -------------------------------------------------------------------------
    def chat(self, body: dict[str, Any]) -> Any:
        """Yield (text piece, None) pairs, then (None, final fields) with Ollama's counters."""
        opts = body.get("options") or {}
        params = {"temperature": opts.get("temperature", 0.8), "max_tokens": opts.get("num_predict", 128),
                  "seed": opts.get("seed"), "stop": opts.get("stop") or None}
        messages = [{"role": m["role"], "content": m.get("content", "")} for m in body.get("messages", [])]
        t0 = time.perf_counter_ns()
        llm = self.load()
        t_loaded = time.perf_counter_ns()
        with self._lock:
            prompt_tokens = None
            finish = None
            t_first = None
            for part in llm.create_chat_completion(messages=messages, stream=True, **params):
                choice = part["choices"][0]
                finish = choice.get("finish_reason") or finish
                text = choice["delta"].get("content") or ""
                if text:
                    if prompt_tokens is None:  # the context holds exactly the prompt at the first piece
                        prompt_tokens, t_first = llm.n_tokens, time.perf_counter_ns()
                    yield text, None
            if prompt_tokens is None:
                prompt_tokens, t_first = llm.n_tokens, time.perf_counter_ns()
            eval_count = llm.n_tokens - prompt_tokens + (1 if finish == "length" else 0)
        t_end = time.perf_counter_ns()
        if body.get("keep_alive") in (0, "0", "0s"):
            self.unload()
        yield None, {
            "done": True, "done_reason": finish or "stop", "total_duration": t_end - t0,
            "load_duration": t_loaded - t0, "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": t_first - t_loaded, "eval_count": eval_count,
            "eval_duration": t_end - t_first,
        }


class _Handler(BaseHTTPRequestHandler):
    api: OllamaAPIServer
    protocol_version = "HTTP/1.0"  # a streamed reply simply ends when the connection closes

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _send_json(self, obj: Any, status: int = 200) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.loads(raw or b"{}")
        if not isinstance(body, dict):
            raise ValueError("request body must be a JSON object")
        return body

    def do_GET(self) -> None:
        self.api.requests.append({"method": "GET", "path": self.path, "body": None})
        if self.path == "/api/version":
            self._send_json({"version": "0.0.0-nasgraph-test"})
        elif self.path == "/api/tags":
            self._send_json(self.api.tags())
        elif self.path == "/api/ps":
            self._send_json(self.api.ps())
        else:
            self._send_json({"error": f"no route {self.path}"}, 404)

    def do_POST(self) -> None:
        try:
            body = self._body()
        except ValueError as e:
            self._send_json({"error": f"invalid JSON: {e}"}, 400)
            return
        self.api.requests.append({"method": "POST", "path": self.path, "body": body})
        try:
            if self.path == "/api/chat":
                self._chat(body)
            elif self.path == "/api/generate":
                self._generate(body)
            else:
                self._send_json({"error": f"no route {self.path}"}, 404)
        except _NotFound as e:
            self._send_json({"error": str(e)}, 404)

    def _chat(self, body: dict[str, Any]) -> None:
        self.api._check_model(body.get("model"))
        head = {"model": body["model"]}
        pieces = self.api.chat(body)
        if body.get("stream", True):
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()
            for text, final in pieces:
                msg = {**head, "created_at": _now(),
                       "message": {"role": "assistant", "content": text or ""}, **(final or {"done": False})}
                self.wfile.write(json.dumps(msg).encode() + b"\n")
                self.wfile.flush()
            return
        text_parts: list[str] = []
        final: dict[str, Any] = {}
        for text, last in pieces:
            if text is not None:
                text_parts.append(text)
            else:
                final = last or {}
        self._send_json({**head, "created_at": _now(),
                         "message": {"role": "assistant", "content": "".join(text_parts)}, **final})

    def _generate(self, body: dict[str, Any]) -> None:
        self.api._check_model(body.get("model"))
        if not body.get("prompt"):  # Ollama: an empty prompt only loads, or with keep_alive 0 unloads
            unload = body.get("keep_alive") in (0, "0", "0s")
            self.api.unload() if unload else self.api.load()
            self._send_json({"model": body["model"], "created_at": _now(), "response": "", "done": True,
                             "done_reason": "unload" if unload else "load"})
            return
        messages = ([{"role": "system", "content": body["system"]}] if body.get("system") else []) + \
            [{"role": "user", "content": body["prompt"]}]
        chat_body = {**body, "messages": messages, "stream": False}
        text, final = "", {}
        for piece, last in self.api.chat(chat_body):
            text, final = (text + piece, final) if piece is not None else (text, last or {})
        self._send_json({"model": body["model"], "created_at": _now(), "response": text, **final})
