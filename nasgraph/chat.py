"""`nasgraph chat`: a conversational design session in the terminal.

A person describes what they need in plain words; the session reads budgets and the dataset out of the
text, hands the rest to the graph as the goal, runs a few iterations with live progress and shows the
designs, their results and the improver's reasoning. Questions are answered from the run's records
(exactly, for the obvious ones) or by the LLM from a compact summary of them. Every line typed and every
answer is saved at once (see chat_session); Ctrl-C stops the current step, never the session.
"""
from __future__ import annotations

import difflib
import shlex
import signal
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from nasgraph.chat_session import (
    Session,
    SessionError,
    answer_context,
    check_name,
    describe_row,
    direct_answer,
    is_question,
    list_sessions,
    parse_request,
    sessions_dir,
)
from nasgraph.config import Config
from nasgraph.errors import NasgraphError
from nasgraph.trace_data import IterationRow, RunDigest, TraceError, list_runs, load_run
from nasgraph.views import fmt_acc, fmt_int

# The LLM handle factory (nasgraph.agents.handle.open_llm unless replaced): called as factory(cfg, progress=...).
LLM_FACTORY: Callable[..., Any] | None = None
MAX_RUN = 50  # iterations one /run may ask for; longer searches belong to `nasgraph run`
ANSWER_TOKENS = 300

HELP = """[bold]Talk[/] in plain words:
  a request  "a CNN for fashion-mnist under 50k parameters, as accurate as possible"
             "try depthwise convolutions", "keep the best and make it faster"
             (budgets like '50k parameters' or '2 epochs' and a dataset name are read from the text;
             the rest becomes the designers' goal; then {auto} iteration(s) run)
  a question "why did the last one fail?", "how many were valid?", "what limits the accuracy?"
[bold]Commands[/]
  /run [N]          run N more iterations (default {auto_or_1})
  /best [K]         the K best designs of this session (default 5), with the best one's code
  /show ID          a design's code and evaluations (an id prefix is enough)
  /diff ID ID       what changed between two designs
  /export ID PATH   write a design's code to PATH (a file, or a folder for ID.py)
  /plan             dataset, budgets and goal as the graph will get them
  /help             this text
  /quit             leave (the session is saved; resume with --session {name})
Ctrl-C stops the current step; Ctrl-D or /quit leaves."""


class ChatError(NasgraphError):
    """Bad input at the prompt; the message says what was expected."""


class ChatApp:
    def __init__(self, cfg: Config, session: Session, console: Console,
                 llm_factory: Callable[..., Any] | None = None, auto: int = 1):
        self.cfg, self.s, self.console, self.auto = cfg, session, console, auto
        self.folder = sessions_dir(cfg.runs_dir)
        self._factory = llm_factory
        self._llm: Any = None
        self._evaluator: Any = None  # kept warm between /run calls (its start imports torch)
        from nasgraph.tools.evaluator.datasets import dataset_names

        self.datasets = dataset_names()
        self.commands: dict[str, tuple[Callable[[list[str]], bool | None], int, int, str]] = {
            "/help": (self.cmd_help, 0, 0, "/help"),
            "/quit": (self.cmd_quit, 0, 0, "/quit"),
            "/exit": (self.cmd_quit, 0, 0, "/exit"),
            "/run": (self.cmd_run, 0, 1, "/run [N]"),
            "/best": (self.cmd_best, 0, 1, "/best [K]"),
            "/show": (self.cmd_show, 1, 1, "/show ID"),
            "/diff": (self.cmd_diff, 2, 2, "/diff ID ID"),
            "/export": (self.cmd_export, 2, 2, "/export ID PATH"),
            "/plan": (self.cmd_plan, 0, 0, "/plan"),
        }

    # -- the loop ------------------------------------------------------------------------------
    def loop(self, read: Callable[[], str] | None = None) -> int:
        read = read or (lambda: self.console.input("[bold green]you›[/] "))
        try:
            while True:
                try:
                    line = read()
                except KeyboardInterrupt:
                    self.console.print("\n[dim](Ctrl-C: nothing is running; /quit leaves, the session is saved)[/]")
                    continue
                except EOFError:
                    self.console.print()
                    line = "/quit"
                try:
                    if not self.handle(line):
                        return 0
                except KeyboardInterrupt:  # landed between steps (while saving, say): still not an exit
                    self.console.print("\n[dim](interrupted)[/]")
        finally:
            self.close()

    def close(self) -> None:
        if self._evaluator is not None:
            self._evaluator.close()
            self._evaluator = None

    def handle(self, line: str) -> bool:
        """One line typed by the person; False when the session should end."""
        line = line.strip()
        if not line:
            return True
        self.s.note("user", line)
        self.save()  # what was typed is kept even if what follows crashes
        keep_going = True
        try:
            if line.startswith("/"):
                keep_going = self.command(line)
            elif is_question(line):
                self.answer(line)
            else:
                self.request(line)
        except KeyboardInterrupt:
            self.say("interrupted; the session goes on", style="yellow")
        except (ChatError, SessionError, TraceError) as e:
            self.say(str(e), style="red")
        except NasgraphError as e:
            self.say(f"error: {str(e).strip().splitlines()[0]}", style="red")
        except Exception as e:  # noqa: BLE001 - the session must outlive any one step
            log = self.folder / f"{self.s.name}.errors.log"
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"--- {time.ctime()} after: {line}\n{traceback.format_exc()}\n")
            self.say(f"unexpected error: {type(e).__name__}: {e} (details in {log}); the session goes on",
                     style="red")
        finally:
            self.save()
        return keep_going

    def say(self, text: str, style: str | None = None, markup: bool = False) -> None:
        self.console.print(text, style=style, markup=markup, highlight=False)
        self.s.note("assistant", text)

    def save(self) -> None:
        try:
            self.s.save(self.folder)
        except SessionError as e:  # a full disk must not end the conversation; say so every time
            self.console.print(f"warning: {e}", style="red", markup=False)

    # -- helpers ---------------------------------------------------------------------------------
    def llm(self) -> Any:
        if self._llm is None:
            factory = self._factory or LLM_FACTORY
            if factory is None:
                from nasgraph.agents.handle import open_llm as factory
            with self.console.status(f"loading {self.cfg.llm.model} ({self.cfg.llm.backend})…"):
                self._llm = factory(self.cfg, progress=lambda m: self.console.print(f"[dim]{m}[/]"))
        return self._llm

    def run_config(self) -> Config:
        ev = self.cfg.evaluator.model_copy(update={"max_params": self.s.max_params or self.cfg.evaluator.max_params})
        # A chat steers with the user's words, which reach only the Prompt Improver: its search stays
        # `improver` unless one was chosen (search = parents would draft the first designs without them).
        search = self.cfg.loop.search if "search" in self.cfg.loop.model_fields_set else "improver"
        loop = self.cfg.loop.model_copy(update={"dataset": self.s.dataset, "search": search,
                                                "epochs": self.s.epochs or self.cfg.loop.epochs})
        return self.cfg.model_copy(update={"evaluator": ev, "loop": loop})

    def digests(self) -> list[RunDigest]:
        known = set(list_runs(self.cfg.runs_dir))
        return [load_run(self.cfg.runs_dir, r) for r in self.s.runs if r in known]

    def done(self) -> int:
        """Iterations finished in the session's current run."""
        return next((d.iterations for d in self.digests() if d.run_id == self.s.run_id), 0)

    def design(self, key: str) -> tuple[str, str, Any]:
        """(id, code, store detail or None) of a design: the store first, then this session's traces."""
        from nasgraph.tools.store import Store, StoreError

        if self.cfg.store_path.exists():
            with Store(self.cfg.store_path) as store:
                try:
                    detail = store.architecture(key)
                    return detail.id, detail.code, detail
                except StoreError as e:
                    if "ambiguous" in str(e) or "not an architecture id" in str(e):
                        raise ChatError(str(e)) from None
        for d in self.digests():
            for r in d.rows:
                if r.arch_id and r.arch_id.startswith(key.lower()) and (d.code_of(r.arch_id) or r.code):
                    return r.arch_id, d.code_of(r.arch_id) or r.code or "", None
        raise ChatError(f"no design '{key}' in the store or in this session; /best lists the designs")

    # -- commands ----------------------------------------------------------------------------------
    def command(self, line: str) -> bool:
        try:
            parts = shlex.split(line)
        except ValueError as e:
            raise ChatError(f"cannot read that command ({e}); quote paths with spaces") from None
        name, args = parts[0].lower(), parts[1:]
        if name not in self.commands:
            raise ChatError(f"unknown command {name}; /help lists the commands")
        fn, lo, hi, usage = self.commands[name]
        if not lo <= len(args) <= hi:
            raise ChatError(f"usage: {usage}")
        return fn(args) is not False

    def cmd_help(self, args: list[str]) -> None:
        self.console.print(HELP.format(auto=self.auto, auto_or_1=self.auto or 1, name=self.s.name))

    def cmd_quit(self, args: list[str]) -> bool:
        self.say(f"session {self.s.name} saved; resume with: nasgraph chat --session {self.s.name}")
        return False

    def cmd_plan(self, args: list[str]) -> None:
        cfg = self.run_config()
        self.say(f"dataset {self.s.dataset} · at most {cfg.evaluator.max_params:,} parameters · "
                 f"{cfg.loop.epochs} epoch(s) · model {cfg.llm.model}\nrun {self.s.run_id}: {self.done()} "
                 f"iterations so far\ngoal: {self.s.goal or '(none yet: describe what you need)'}")

    def cmd_run(self, args: list[str]) -> None:
        n = _int_arg(args, 0, self.auto or 1, 1, MAX_RUN, "/run [N]")
        self.run(n)

    def cmd_best(self, args: list[str]) -> None:
        k = _int_arg(args, 0, 5, 1, 100, "/best [K]")
        top = sorted((r for d in self.digests() for r in d.top(k)), key=lambda r: -(r.accuracy or 0))[:k]
        if not top:
            self.say("no valid design yet; /run N designs some")
            return
        t = Table(title=f"best designs of session {self.s.name}")
        for col in ("#", "id", "accuracy", "params", "FLOPs", "iter", "asked for"):
            t.add_column(col, overflow="fold")
        for i, r in enumerate(top, 1):
            t.add_row(str(i), r.arch_id or "", fmt_acc(r.accuracy), fmt_int(r.params), fmt_int(r.flops),
                      str(r.iteration), (r.triple.get("modification") or "")[:80])
        self.console.print(t)
        _, code, _ = self.design(top[0].arch_id or "")
        self.console.print(Syntax(code.strip(), "python", line_numbers=True, word_wrap=True))
        self.s.note("assistant", "best designs:\n" + "\n".join(describe_row(r) for r in top))

    def cmd_show(self, args: list[str]) -> None:
        arch_id, code, detail = self.design(args[0])
        self.console.print(f"[bold]{arch_id}[/]" + (f"  origin {detail.origin}" if detail else "  (from the trace)"))
        self.console.print(Syntax(code.strip(), "python", line_numbers=True, word_wrap=True))
        if detail and detail.evaluations:
            t = Table(title="evaluations")
            for col in ("dataset", "status", "accuracy", "params", "run", "iter", "error"):
                t.add_column(col, overflow="fold")
            for e in detail.evaluations:
                t.add_row(e.dataset, e.status, fmt_acc(e.accuracy), fmt_int(e.params), str(e.run_id or ""),
                          str(e.iteration or ""), (e.error or "").strip().splitlines()[-1][:80] if e.error else "")
            self.console.print(t)
        self.s.note("assistant", f"showed {arch_id}")

    def cmd_diff(self, args: list[str]) -> None:
        (a, code_a, _), (b, code_b, _) = self.design(args[0]), self.design(args[1])
        diff = "".join(difflib.unified_diff(code_a.strip().splitlines(True), code_b.strip().splitlines(True),
                                            fromfile=a, tofile=b))
        if not diff:
            self.say(f"{a} and {b} have the same code")
            return
        self.console.print(Syntax(diff, "diff", word_wrap=True))
        self.s.note("assistant", f"diff {a} {b}:\n{diff}")

    def cmd_export(self, args: list[str]) -> None:
        arch_id, code, _ = self.design(args[0])
        path = Path(args[1]).expanduser()
        if path.is_dir() or args[1].endswith(("/", "\\")):
            path = path / f"{arch_id}.py"
        if path.exists():
            raise ChatError(f"{path} exists; give another path (nothing was overwritten)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(code.strip() + "\n", encoding="utf-8")
        except OSError as e:
            raise ChatError(f"cannot write {path}: {e}") from None
        self.say(f"wrote {arch_id} to {path}")

    # -- talk ----------------------------------------------------------------------------------------
    def request(self, text: str) -> None:
        found = parse_request(text, self.datasets)
        if "dataset" in found and found["dataset"] != self.s.dataset:
            if self.done() or self.s.run_id in list_runs(self.cfg.runs_dir):
                self.s.switch_dataset(found["dataset"])
            else:  # nothing ran yet: the same run id simply starts on the other dataset
                self.s.dataset = found["dataset"]
        if not self.s.brief or "dataset" in found:
            self.s.brief, self.s.requests = text, []
        else:
            self.s.requests.append(text)
        if "max_params" in found:
            self.s.max_params = found["max_params"]
        if "epochs" in found:
            self.s.epochs = found["epochs"]
        cfg = self.run_config()
        read = [f"{k.replace('_', ' ')} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in found.items()]
        self.say(f"Understood{(' — ' + ', '.join(read)) if read else ''}. Plan: {self.s.dataset}, at most "
                 f"{cfg.evaluator.max_params:,} parameters, {cfg.loop.epochs} epoch(s); the designers get "
                 f"your words as their goal.", style="cyan")
        if self.auto:
            self.run(self.auto)
        else:
            self.say("/run N designs N models with this plan.")

    def answer(self, question: str) -> None:
        digests = self.digests()
        direct = direct_answer(question, digests)
        if direct is not None:
            self.say(direct)
            self.console.print("[dim](from the run's records)[/]")
            return
        from nasgraph.agents.llm_call import call
        from nasgraph.agents.prompts import render

        system = render("chat.answer.system")
        user = render("chat.answer.user", context=answer_context(self.s, digests), question=question)
        llm = self.llm()
        chat = _short(llm.at_step(len(self.s.transcript)))
        with self.console.status("thinking…"):
            reply = call(chat, system, user, "chat")
        self.say(reply.text.strip() or "(the model gave no answer)")
        self.console.print(f"[dim](the model's answer from a summary of this session; {reply.tokens_out} tokens, "
                           f"{reply.seconds:.1f} s)[/]")

    def run(self, n: int) -> None:
        from nasgraph.graph.run import run_loop
        from nasgraph.views import RunView

        done = self.done()
        llm = self.llm()
        self.say(f"running {n} iteration(s) in run {self.s.run_id} (Ctrl-C stops; finished steps are kept)",
                 style="dim")
        if self._evaluator is None:
            from nasgraph.tools.evaluator import Evaluator
            from nasgraph.tools.evaluator.harness import pick_device

            self._evaluator = Evaluator.from_config(self.cfg.evaluator, self.cfg.data_dir, workers=1,
                                                    device=str(pick_device(self.cfg.evaluator.device)))
        try:
            with RunView(self.console, self.s.run_id, done + n) as view:
                run_loop(self.run_config(), llm, run_id=self.s.run_id, iterations=done + n, goal=self.s.goal,
                         on_update=view.update, evaluator=self._evaluator, retask=True)
        except BaseException as e:
            self.close()  # stopped part-way: its state is unknown, the next /run starts a fresh one
            if not isinstance(e, KeyboardInterrupt):
                raise
            self.say("interrupted: the run keeps every finished step; /run N continues it", style="yellow")
        finally:
            if not self.console.is_terminal:
                self.console.line()  # a live panel written to a file or pipe ends without a newline
        self.show_new(done)

    def show_new(self, done: int) -> None:
        digest = next((d for d in self.digests() if d.run_id == self.s.run_id), None)
        rows = [r for r in digest.rows if r.iteration > done] if digest else []
        if not rows:
            return
        t = Table(title=f"run {self.s.run_id}: iterations {rows[0].iteration}–{rows[-1].iteration}")
        for col in ("iter", "asked for", "status", "accuracy", "params", "novelty", "id"):
            t.add_column(col, overflow="fold")
        for r in rows:
            style = "green" if r.ok else ("yellow" if r.status == "duplicate" else "red")
            t.add_row(str(r.iteration), (r.triple.get("modification") or "")[:70], f"[{style}]{r.status}[/]",
                      fmt_acc(r.accuracy), fmt_int(r.params), "–" if r.novelty is None else f"{r.novelty:.2f}",
                      r.arch_id or "–")
        self.console.print(t)
        last = rows[-1]
        if last.triple:
            self.console.print("[bold magenta]improver's reasoning[/] (iteration "
                               f"{last.iteration}):\n  problem: {last.triple.get('problem', '')}\n"
                               f"  modification: {last.triple.get('modification', '')}\n"
                               f"  expected: {last.triple.get('expected_effect', '')}", highlight=False)
        shown = _pick(rows)
        if shown and (shown.code or digest.code_of(shown.arch_id or "")):
            self.console.print(f"[bold]{'best new design' if shown.ok else 'last design'}[/] {shown.arch_id}: "
                               f"{describe_row(shown)}", highlight=False)
            code = digest.code_of(shown.arch_id or "") or shown.code or ""
            self.console.print(Syntax(code.strip(), "python", line_numbers=True, word_wrap=True))
        best = digest.best
        if best:
            self.console.print(f"best in this run: {fmt_acc(best.accuracy)} with {fmt_int(best.params)} params "
                               f"({best.arch_id})")
        self.s.note("assistant", "\n".join(describe_row(r) for r in rows))


def _pick(rows: list[IterationRow]) -> IterationRow | None:
    ok = [r for r in rows if r.ok and r.accuracy is not None]
    return max(ok, key=lambda r: r.accuracy) if ok else (rows[-1] if rows else None)


def _short(chat: Any) -> Any:
    """The chat model with a short answer budget where the backend takes one."""
    from nasgraph.agents.llm import with_options

    try:
        return with_options(chat, max_tokens=ANSWER_TOKENS)
    except TypeError:
        return chat


def _int_arg(args: list[str], i: int, default: int, lo: int, hi: int, usage: str) -> int:
    if len(args) <= i:
        return default
    try:
        n = int(args[i])
    except ValueError:
        raise ChatError(f"'{args[i]}' is not a whole number; usage: {usage}") from None
    if not lo <= n <= hi:
        raise ChatError(f"{n} is out of range {lo}–{hi}; usage: {usage}")
    return n


# -- command line ---------------------------------------------------------------------------------
def cmd_chat(args, cfg: Config, console: Console) -> int:
    from nasgraph.trace_cli import guarded

    return guarded(start_chat)(args, cfg, console)


def _ctrl_c_reaches_us() -> None:
    """The chat is driven by Ctrl-C (stop a run, a note at the prompt). A process started with SIGINT
    ignored or blocked (inherited from whatever launched it) would never see one: take it back."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def start_chat(args, cfg: Config, console: Console) -> int:
    _ctrl_c_reaches_us()
    folder = sessions_dir(cfg.runs_dir)
    if args.list:
        sessions = list_sessions(folder)
        if not sessions:
            console.print(f"no chat sessions in {folder}")
            return 0
        t = Table(title=str(folder))
        for col in ("session", "dataset", "runs", "updated", "brief"):
            t.add_column(col, overflow="fold")
        for s in sessions:
            t.add_row(s.name, s.dataset, ", ".join(s.runs), time.strftime("%m-%d %H:%M", time.localtime(s.updated)),
                      s.brief[:60])
        console.print(t)
        return 0
    if not 0 <= args.auto <= MAX_RUN:
        raise ChatError(f"--auto must be between 0 and {MAX_RUN}")
    name = check_name(args.session or time.strftime("%Y%m%d-%H%M%S"))
    from nasgraph.tools.evaluator.datasets import dataset_names  # imports torch: after the quick checks

    if args.dataset and args.dataset not in dataset_names():
        raise ChatError(f"unknown dataset '{args.dataset}'; one of: {', '.join(dataset_names())}")
    resumed = (folder / f"{name}.json").exists()
    session = Session.load(folder, name) if resumed else Session.new(name, args.dataset or cfg.loop.dataset)
    if resumed and args.dataset and args.dataset != session.dataset:
        session.switch_dataset(args.dataset)
    session.max_params = args.max_params or session.max_params
    session.epochs = args.epochs or session.epochs
    session.save(folder)
    try:
        import readline  # noqa: F401 - line editing and history at the prompt
    except ImportError:
        pass
    app = ChatApp(cfg, session, console, auto=args.auto)
    welcome(app, resumed)
    return app.loop()


def welcome(app: ChatApp, resumed: bool) -> None:
    s, c = app.s, app.console
    c.rule(f"nasgraph chat · session {s.name}")
    if resumed:
        c.print(f"resumed session [bold]{s.name}[/] ({len(s.transcript)} lines so far; run {s.run_id}, "
                f"{app.done()} iterations). Last exchanges:")
        for entry in s.transcript[-6:]:
            who = "you" if entry["role"] == "user" else "nasgraph"
            c.print(f"  {who}: {entry['text'][:300]}", style="dim", markup=False, highlight=False)
    c.print(f"dataset {s.dataset} · model {app.cfg.llm.model} · saved in {app.folder / (s.name + '.json')}",
            highlight=False)
    c.print("Describe the model you need, ask about the results, or type /help.")


def register(subparsers, commands: dict) -> None:
    c = subparsers.add_parser("chat", help="design models in a conversation (Rich REPL)")
    c.add_argument("--session", help="session name: resumes it if saved, else starts it (default: a timestamp)")
    c.add_argument("--list", action="store_true", help="list saved sessions")
    c.add_argument("--dataset", help="dataset name (see `nasgraph datasets`)")
    c.add_argument("--model", help="LLM name (embedded name, GGUF path, or Ollama model)")
    c.add_argument("--backend", choices=["llamacpp", "ollama"])
    c.add_argument("--max-params", dest="max_params", type=int)
    c.add_argument("--epochs", type=int)
    c.add_argument("--threads", type=int)
    c.add_argument("--device", choices=["auto", "cpu", "cuda"])
    c.add_argument("--time-budget-s", dest="time_budget_s", type=float, help="max projected seconds per epoch")
    c.add_argument("--auto", type=int, default=1, help="iterations run after each request (0: only on /run)")
    commands["chat"] = cmd_chat
