"""Architecture fingerprints: a canonical hash for dedup and MinHash signatures for novelty.

Two modules are "the same architecture" when they differ only in comments, docstrings, formatting,
type annotations or the names of local variables/arguments inside functions (locals become v0, v1, …
in order of first appearance; a local bound only by straight-line assignments gets a new number per
binding, so ``x = f(x)`` and ``h = f(x)`` are the same dataflow). Attribute names,
class/def names, globals and imported names are kept: they are structure (``self.conv1`` and
``nn.Conv2d`` say what the network is). Constants are kept, so a different channel count or an
added layer gives a different id.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import io
import re
import tokenize
from collections.abc import Collection

import numpy as np
from datasketch import MinHash, MinHashLSH

# Bump when normalize()/shingles() change: stored ids and signatures are only comparable within one
# version (the store records it).
FINGERPRINT_VERSION = 1
NUM_PERM = 128
SHINGLE_K = 5
# Written explicitly: datasketch refuses to rebuild a MinHash from stored values without it.
MINHASH_SCHEME = "affine32"
MINHASH_SEED = 1


# --------------------------------------------------------------------------------------------
# normalisation
# --------------------------------------------------------------------------------------------
def normalize(code: str) -> str:
    """Canonical source of ``code``: parsed, stripped of docstrings/annotations, locals renamed.

    Raises SyntaxError when ``code`` does not parse.
    """
    tree = ast.parse(code)
    tree = _Stripper().visit(tree)
    tree = _LocalRenamer().visit(tree)
    ast.fix_missing_locations(tree)
    return ast.unparse(tree)


def canonical_id(code: str) -> str:
    """16 hex chars of sha256 over the normalised source (raises SyntaxError on bad code)."""
    return hashlib.sha256(normalize(code).encode("utf-8")).hexdigest()[:16]


class _Stripper(ast.NodeTransformer):
    """Drops what does not change the network: bare string statements (docstrings) and annotations."""

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        for field in ("body", "orelse", "finalbody"):
            stmts = getattr(node, field, None)
            if not isinstance(stmts, list) or not stmts or not isinstance(stmts[0], ast.stmt):
                continue
            # A block that held only a docstring must stay syntactically valid.
            kept = [s for s in stmts if not _is_bare_string(s)] or [ast.Pass()]
            setattr(node, field, kept)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.annotation = None
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.returns = None
        return self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST | None:
        if node.value is None:
            return None  # a bare declaration binds nothing at run time
        return ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node)


def _is_bare_string(stmt: ast.stmt) -> bool:
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str))


class _Scope:
    """One function's renaming state.

    Names in ``versioned`` are bound only by plain assignments at the top level of the function
    body (and as arguments): each binding gets a fresh number and each read the latest one, so
    ``x = f(x)`` and ``h = f(x)`` normalise alike. Every other local keeps one number throughout.
    """

    def __init__(self, local_names: set[str], versioned: set[str], counter: list[int]) -> None:
        self.local_names = local_names
        self.versioned = versioned
        self.stable: dict[str, str] = {}
        self.current: dict[str, str] = {}
        self.counter = counter  # shared with nested functions so their names never collide

    def _fresh(self) -> str:
        self.counter[0] += 1
        return f"v{self.counter[0] - 1}"

    def bind(self, name: str) -> str:
        if name in self.versioned:
            self.current[name] = self._fresh()
            return self.current[name]
        return self.use(name)

    def use(self, name: str) -> str:
        if name in self.versioned:
            if name not in self.current:  # read before any binding (an UnboundLocalError at run time)
                self.current[name] = self._fresh()
            return self.current[name]
        if name not in self.stable:
            self.stable[name] = self._fresh()
        return self.stable[name]


class _LocalRenamer(ast.NodeTransformer):
    """Renames function-local names to v0, v1, … in order of first appearance."""

    def __init__(self) -> None:
        self.scopes: list[_Scope] = []

    def _scope_of(self, name: str) -> _Scope | None:
        for scope in reversed(self.scopes):
            if name in scope.local_names:
                return scope
        return None

    def _use(self, name: str) -> str:
        scope = self._scope_of(name)
        return scope.use(name) if scope else name

    def _bind(self, name: str) -> str:
        scope = self._scope_of(name)
        return scope.bind(name) if scope else name

    def _enter(self, node: ast.AST) -> None:
        counter = self.scopes[-1].counter if self.scopes else [0]
        local_names = _function_locals(node)
        self.scopes.append(_Scope(local_names, _versioned_locals(node, local_names), counter))

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        # Decorators and defaults are evaluated in the enclosing scope.
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.args.defaults = [self.visit(d) for d in node.args.defaults]
        node.args.kw_defaults = [self.visit(d) if d is not None else None for d in node.args.kw_defaults]
        self._enter(node)
        try:
            for a in _all_args(node.args):
                a.arg = self._bind(a.arg)
            node.body = [self.visit(s) for s in node.body]
            node.body = [s for s in node.body if s is not None] or [ast.Pass()]
        finally:
            self.scopes.pop()
        return node

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        node.args.defaults = [self.visit(d) for d in node.args.defaults]
        node.args.kw_defaults = [self.visit(d) if d is not None else None for d in node.args.kw_defaults]
        self._enter(node)
        try:
            for a in _all_args(node.args):
                a.arg = self._bind(a.arg)
            node.body = self.visit(node.body)
        finally:
            self.scopes.pop()
        return node

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        # The value is read before the targets are bound: visit it first so reads see the old version.
        node.value = self.visit(node.value)
        node.targets = [self.visit(t) for t in node.targets]
        return node

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self._bind(node.id) if isinstance(node.ctx, ast.Store) else self._use(node.id)
        return node

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        if node.name:
            node.name = self._use(node.name)
        return self.generic_visit(node)

    def visit_MatchAs(self, node: ast.MatchAs) -> ast.AST:
        if node.name:
            node.name = self._use(node.name)
        return self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> ast.AST:
        if node.name:
            node.name = self._use(node.name)
        return node

    def visit_Global(self, node: ast.Global) -> ast.AST:
        return node  # declared names are globals: never renamed

    visit_Nonlocal = visit_Global


def _all_args(args: ast.arguments) -> list[ast.arg]:
    out = [*args.posonlyargs, *args.args]
    if args.vararg:
        out.append(args.vararg)
    out.extend(args.kwonlyargs)
    if args.kwarg:
        out.append(args.kwarg)
    return out


def _function_body(fn: ast.AST) -> list[ast.AST]:
    return [fn.body] if isinstance(fn, ast.Lambda) else fn.body


def _function_locals(fn: ast.AST) -> set[str]:
    """Names bound in ``fn``'s own scope, minus def/class names, imports and global/nonlocal ones."""
    bound = {a.arg for a in _all_args(fn.args)}
    kept: set[str] = set()
    stack: list[ast.AST] = list(_function_body(fn))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            kept.add(node.name)  # def/class names are structure
            # Their decorators (and a function's defaults) run in this scope.
            stack.extend(node.decorator_list)
            if not isinstance(node, ast.ClassDef):
                stack.extend(node.args.defaults)
                stack.extend(d for d in node.args.kw_defaults if d is not None)
            else:
                stack.extend(node.bases)
                stack.extend(k.value for k in node.keywords)
            continue
        if isinstance(node, ast.Lambda):
            stack.extend(node.args.defaults)
            continue
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            kept.update(node.names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                kept.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
        stack.extend(ast.iter_child_nodes(node))
    return bound - kept


def _target_names(target: ast.AST) -> list[ast.Name]:
    if isinstance(target, ast.Name):
        return [target]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for elt in target.elts for n in _target_names(elt)]
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return []  # attribute/subscript targets bind no name


def _versioned_locals(fn: ast.AST, local_names: set[str]) -> set[str]:
    """Locals bound only by top-level plain assignments (or as arguments) and not seen by nested
    functions: for these, versioning by binding is exact, because no branch or loop decides which
    binding a later read sees, and no closure reads them late."""
    plain = {id(n) for stmt in _function_body(fn) if isinstance(stmt, ast.Assign)
             for t in stmt.targets for n in _target_names(t)}
    excluded: set[str] = set()
    stack: list[ast.AST] = list(_function_body(fn))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            excluded.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
            continue
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load) and id(node) not in plain:
            excluded.add(node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            excluded.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            excluded.add(node.name)
        stack.extend(ast.iter_child_nodes(node))
    return local_names - excluded


# --------------------------------------------------------------------------------------------
# shingles and MinHash
# --------------------------------------------------------------------------------------------
_FALLBACK_TOKEN = re.compile(r"[A-Za-z_]\w*|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\S")
_LAYOUT_TOKENS = {tokenize.NEWLINE: "\n", tokenize.INDENT: "<in>", tokenize.DEDENT: "<de>"}
_SKIP_TOKENS = {tokenize.ENCODING, tokenize.ENDMARKER, tokenize.NL, tokenize.COMMENT}


def _tokens(code: str) -> list[str]:
    try:
        src = normalize(code)
        return [_LAYOUT_TOKENS.get(t.type, t.string)
                for t in tokenize.generate_tokens(io.StringIO(src).readline)
                if t.type not in _SKIP_TOKENS]
    except (SyntaxError, tokenize.TokenError, ValueError, RecursionError):
        # Unparsable code (a syntax-error outcome) still gets a signature, from its raw tokens.
        return _FALLBACK_TOKEN.findall(code)


def shingles(code: str, k: int = SHINGLE_K) -> set[str]:
    """Token k-shingles of the normalised code (raw tokens when the code does not parse)."""
    if k < 1:
        raise ValueError(f"shingle size must be >= 1, got {k}")
    toks = _tokens(code)
    if len(toks) <= k:
        return {"\x1f".join(toks)} if toks else set()
    return {"\x1f".join(toks[i:i + k]) for i in range(len(toks) - k + 1)}


@functools.cache
def _permutations(num_perm: int) -> np.ndarray:
    # Generating the permutations dominates MinHash construction; share one set per size.
    return MinHash(num_perm=num_perm, seed=MINHASH_SEED, scheme=MINHASH_SCHEME).permutations


def minhash(code: str, num_perm: int = NUM_PERM) -> MinHash:
    m = MinHash(num_perm=num_perm, seed=MINHASH_SEED, scheme=MINHASH_SCHEME,
                permutations=_permutations(num_perm))
    m.update_batch([s.encode("utf-8") for s in sorted(shingles(code))])
    return m


def minhash_to_bytes(m: MinHash) -> bytes:
    return np.asarray(m.hashvalues, dtype="<u4").tobytes()


def minhash_from_bytes(blob: bytes) -> MinHash:
    values = np.frombuffer(blob, dtype="<u4").astype(np.uint64)
    if values.size == 0:
        raise ValueError("empty MinHash signature")
    return MinHash(num_perm=values.size, seed=MINHASH_SEED, scheme=MINHASH_SCHEME,
                   hashvalues=values, permutations=_permutations(values.size))


# --------------------------------------------------------------------------------------------
# novelty index
# --------------------------------------------------------------------------------------------
class NoveltyIndex:
    """MinHash signatures of every added design, for ``novelty = 1 - max Jaccard`` queries.

    Up to ``scan_below`` entries the max is exact: one vectorised comparison against every stored
    signature (measured ~1 ms per query at 10k entries, faster than asking LSH, because generated
    designs are alike and LSH then returns thousands of candidates). From ``scan_below`` entries on,
    a MinHashLSH (built then, kept up to date after) proposes the candidates at or above
    ``threshold`` and the max is taken exactly over their MinHash estimates; when it proposes
    nothing the full scan runs. LSH can miss a pair (a false negative), in which case the reported
    max is the best among the candidates it found.
    """

    def __init__(self, num_perm: int = NUM_PERM, threshold: float = 0.5, scan_below: int = 20_000) -> None:
        self.num_perm = num_perm
        self.threshold = threshold
        self.scan_below = scan_below
        self._lsh: MinHashLSH | None = None
        self._row: dict[str, int] = {}
        self._keys: list[str] = []
        self._matrix = np.empty((64, num_perm), dtype=np.uint32)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._row

    def add(self, key: str, code: str) -> None:
        self.add_minhash(key, minhash(code, self.num_perm))

    def add_minhash(self, key: str, m: MinHash) -> None:
        """Adds a precomputed signature (the store rebuilds the index this way). Re-adding a key is a no-op."""
        if key in self._row:
            return
        if len(m.hashvalues) != self.num_perm:
            raise ValueError(f"signature has {len(m.hashvalues)} permutations, index uses {self.num_perm}")
        n = len(self._keys)
        if n == len(self._matrix):
            self._matrix = np.concatenate([self._matrix, np.empty_like(self._matrix)])
        self._matrix[n] = m.hashvalues
        self._row[key] = n
        self._keys.append(key)
        if self._lsh is not None:
            self._lsh.insert(key, m)
        elif len(self._keys) >= self.scan_below:
            self._build_lsh()

    def _build_lsh(self) -> None:
        self._lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)
        perms = _permutations(self.num_perm)
        with self._lsh.insertion_session() as session:
            for key, row in self._row.items():
                session.insert(key, MinHash(num_perm=self.num_perm, seed=MINHASH_SEED, scheme=MINHASH_SCHEME,
                                            hashvalues=self._matrix[row].astype(np.uint64), permutations=perms))

    def novelty(self, code: str, exclude: Collection[str] = ()) -> tuple[float, str | None]:
        """(1 - max Jaccard estimate against everything added but `exclude`, key of the nearest);
        (1.0, None) when nothing is left to compare with."""
        return self.novelty_of(minhash(code, self.num_perm), exclude)

    def novelty_of(self, m: MinHash, exclude: Collection[str] = ()) -> tuple[float, str | None]:
        n = len(self._keys)
        skip = sorted({self._row[k] for k in exclude if k in self._row})
        if n - len(skip) <= 0:
            return 1.0, None
        query = np.asarray(m.hashvalues, dtype=np.uint32)
        candidates = self._lsh.query(m) if self._lsh is not None else None
        candidates = [c for c in candidates or () if c not in exclude]
        if candidates:
            rows = np.fromiter((self._row[c] for c in candidates), dtype=np.int64, count=len(candidates))
            sims = (self._matrix[rows] == query).mean(axis=1)
            best = int(np.argmax(sims))
            return 1.0 - float(sims[best]), self._keys[int(rows[best])]
        sims = (self._matrix[:n] == query).mean(axis=1)
        sims[skip] = -1.0
        best = int(np.argmax(sims))
        return 1.0 - float(sims[best]), self._keys[best]
