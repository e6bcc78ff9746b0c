"""A FUSE file system that loses, on a "power cut", everything that was not synced.

Run as its own process: `python tests/powercut/fs.py MOUNTPOINT BACKING` (or `--zygote`, which
forks one per mount: see `zygote`). The backing directory is the "disk": it holds only what was
made durable. Everything else is a write-back cache in this process's memory, which reads see:

- file data (writes and truncates) reaches the disk with `fsync`/`fdatasync` of that file;
- a directory's entries (create, mkdir, rename, unlink, rmdir) reach the disk with `fsync` of
  that directory; a rename between two directories needs both fsyncs.

SIGUSR1 is the cut: the process exits at once, between two requests (every handler runs without
an `await`, so no fsync is ever half applied), and keeps nothing that was only in memory. The
test then lazily unmounts the dead mount and starts a new process on the same backing directory,
which sees exactly what survived. SIGTERM/SIGINT or `fusermount3 -u` unmount cleanly (also a
cut: nothing unsynced is written on the way out). The process also unmounts itself when its
parent (the test) dies.

Model. The live tree (inode -> node) is what the kernel sees. The durable state is a second
inode graph: a file's durable data is the copy taken at its last fsync, a directory's durable
entries the copy of its entries at its last fsync. The backing directory is that graph projected
from the root; each fsync updates the projection in place. So:

- created, written, never fsynced, cut -> the file does not exist (or, if its directory was
  fsynced, exists and is empty);
- created, written, fsynced, but its directory never fsynced -> after a cut it does not exist;
  the data fsync is kept in memory and lands when the directory's fsync makes the entry durable;
- fsync of the file and of its directory (either order) -> kept with its data;
- data written after the last fsync of a file whose entry is durable -> lost, the rest kept;
- truncate is data of the file: undone by a cut unless the file was fsynced after it;
- rename over an existing file without a directory fsync -> the old file is back; with it, the
  new one (with the data of its last fsync) is there;
- unlink or rmdir without a directory fsync -> the entry is back, with its durable content;
- a directory created with mkdir and made durable by its parent's fsync is empty until it is
  fsynced itself; removing a directory entry durably removes its whole durable subtree;
- a rename between directories with only one of them fsynced leaves the file in both or in
  neither (real file systems journal a rename atomically; we are harsher, never kinder);
- links, symlinks, device nodes and xattrs are not supported (storage uses none of them);
- inodes are never forgotten, and after a cut inode numbers are new (the mount is new).

Whole contents are held in memory and rewritten on each fsync: this is for tests, not speed.

A full disk, for the nemesis (tests/soak/): when the environment names a control file in
`POWERCUT_CAPACITY_FILE`, the file system polls it (every 0.1 s). While it holds a number N,
writes that grow the live files by more than N bytes in total, counted from when that number
appeared, fail with ENOSPC; while it is missing or empty, space is unlimited. Without the
variable nothing changes.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import signal
import stat
import sys
import time
import traceback
from dataclasses import dataclass, field

import pyfuse3
import trio

ROOT = pyfuse3.ROOT_INODE


@dataclass
class Node:
    """A live inode: a file (`entries` is None) or a directory (`data` unused)."""

    mode: int
    data: bytearray = field(default_factory=bytearray)
    entries: dict[bytes, int] | None = None
    parent: int = ROOT  # directories only: where the live tree holds them
    uid: int = 0
    gid: int = 0
    mtime_ns: int = field(default_factory=time.time_ns)

    @property
    def is_dir(self) -> bool:
        return self.entries is not None


@dataclass
class Durable:
    """What survives a cut: a file's data at its last fsync, a directory's entries at its."""

    mode: int
    data: bytes = b""
    entries: dict[bytes, int] | None = None


def _cycle_free(stack: tuple[int, ...], child: int) -> bool:
    return child not in stack


class PowerCutFS(pyfuse3.Operations):  # type: ignore[misc]
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, backing: str) -> None:
        super().__init__()
        self.backing = os.path.abspath(backing)
        self.nodes: dict[int, Node] = {}
        self.durable: dict[int, Durable] = {}
        self.next_ino = ROOT + 1
        self.room = math.inf  # bytes the live files may still grow by (the capacity option)
        root = os.stat(self.backing)
        self.nodes[ROOT] = Node(mode=root.st_mode, entries={})
        self.durable[ROOT] = Durable(mode=root.st_mode, entries={})
        self._load(self.backing, ROOT)

    # --- the disk ------------------------------------------------------------------------

    def _load(self, path: str, ino: int) -> None:
        """Read what survived into both the live and the durable state."""
        live_entries = self.nodes[ino].entries
        durable_entries = self.durable[ino].entries
        assert live_entries is not None and durable_entries is not None
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            st = entry.stat(follow_symlinks=False)
            child = self._new_ino()
            if stat.S_ISDIR(st.st_mode):
                self.nodes[child] = Node(mode=st.st_mode, entries={}, parent=ino)
                self.durable[child] = Durable(mode=st.st_mode, entries={})
                self._load(entry.path, child)
            elif stat.S_ISREG(st.st_mode):
                with open(entry.path, "rb") as f:
                    content = f.read()
                self.nodes[child] = Node(mode=st.st_mode, data=bytearray(content))
                self.durable[child] = Durable(mode=st.st_mode, data=content)
            else:
                continue
            name = os.fsencode(entry.name)
            live_entries[name] = child
            durable_entries[name] = child

    def _durable_paths(self, target: int) -> list[tuple[str, tuple[int, ...]]]:
        """Every backing path where `target` is reachable, with the inodes above it."""
        found: list[tuple[str, tuple[int, ...]]] = []

        def walk(ino: int, path: str, stack: tuple[int, ...]) -> None:
            if ino == target:
                found.append((path, stack))
            entries = self.durable[ino].entries
            for name, child in (entries or {}).items():
                if _cycle_free(stack, child):
                    walk(child, os.path.join(path, os.fsdecode(name)), (*stack, child))

        walk(ROOT, self.backing, (ROOT,))
        return found

    def _materialize(self, path: str, ino: int, stack: tuple[int, ...]) -> None:
        node = self.durable[ino]
        self._remove(path)  # whatever was there is replaced (never merged into)
        if node.entries is None:
            with open(path, "wb") as f:
                f.write(node.data)
            os.chmod(path, stat.S_IMODE(node.mode))
            return
        os.mkdir(path, stat.S_IMODE(node.mode))
        for name, child in node.entries.items():
            if _cycle_free(stack, child):
                self._materialize(os.path.join(path, os.fsdecode(name)), child, (*stack, child))

    @staticmethod
    def _remove(path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)

    def _sync_file(self, ino: int) -> None:
        node = self.nodes[ino]
        self.durable[ino] = Durable(mode=node.mode, data=bytes(node.data))
        for path, stack in self._durable_paths(ino):
            self._materialize(path, ino, stack)

    def _sync_dir(self, ino: int) -> None:
        node = self.nodes[ino]
        assert node.entries is not None
        new = dict(node.entries)
        for child in new.values():
            if child not in self.durable:  # never synced itself: durable, but empty
                live = self.nodes[child]
                self.durable[child] = Durable(mode=live.mode, entries={} if live.is_dir else None)
        old = self.durable.setdefault(ino, Durable(mode=node.mode, entries={})).entries or {}
        self.durable[ino].entries = new
        for path, stack in self._durable_paths(ino):
            for name, child in old.items():
                if new.get(name) != child:
                    self._remove(os.path.join(path, os.fsdecode(name)))
            for name, child in new.items():
                if old.get(name) != child and _cycle_free(stack, child):
                    self._materialize(os.path.join(path, os.fsdecode(name)), child, (*stack, child))

    # --- the live tree -------------------------------------------------------------------

    def _new_ino(self) -> int:
        ino = self.next_ino
        self.next_ino += 1
        return ino

    def _node(self, ino: int) -> Node:
        try:
            return self.nodes[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ESTALE) from None

    def _dir(self, ino: int) -> dict[bytes, int]:
        entries = self._node(ino).entries
        if entries is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return entries

    def _child(self, parent: int, name: bytes) -> int:
        try:
            return self._dir(parent)[name]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        node = self._node(ino)
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = ino
        attr.generation = 0
        attr.entry_timeout = 300
        attr.attr_timeout = 300
        attr.st_mode = node.mode
        attr.st_nlink = 2 if node.is_dir else 1
        attr.st_uid = node.uid
        attr.st_gid = node.gid
        attr.st_rdev = 0
        attr.st_size = 4096 if node.is_dir else len(node.data)
        attr.st_blksize = 4096
        attr.st_blocks = (attr.st_size + 511) // 512
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = node.mtime_ns
        return attr

    def _add(self, parent: int, name: bytes, node: Node, ctx: pyfuse3.RequestContext) -> int:
        entries = self._dir(parent)
        if name in entries:
            raise pyfuse3.FUSEError(errno.EEXIST)
        node.uid, node.gid = ctx.uid, ctx.gid
        ino = self._new_ino()
        self.nodes[ino] = node
        entries[name] = ino
        self._node(parent).mtime_ns = time.time_ns()
        return ino

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if name == b".":
            return self._attr(parent_inode)
        if name == b"..":
            return self._attr(self._node(parent_inode).parent)
        return self._attr(self._child(parent_inode, name))

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attr(inode)

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        if fields.update_size:
            if node.is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            self._grow(node, attr.st_size)
            self._truncate(node, attr.st_size)
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            node.uid = attr.st_uid
        if fields.update_gid:
            node.gid = attr.st_gid
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        return self._attr(inode)

    @staticmethod
    def _truncate(node: Node, size: int) -> None:
        if size < len(node.data):
            del node.data[size:]
        else:
            node.data.extend(bytes(size - len(node.data)))
        node.mtime_ns = time.time_ns()

    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = Node(mode=stat.S_IFDIR | stat.S_IMODE(mode), entries={}, parent=parent_inode)
        return self._attr(self._add(parent_inode, name, node, ctx))

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        ino = self._add(parent_inode, name, Node(mode=stat.S_IFREG | stat.S_IMODE(mode)), ctx)
        return pyfuse3.FileInfo(fh=ino, keep_cache=False), self._attr(ino)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & os.O_TRUNC:
            self._truncate(node, 0)
        return pyfuse3.FileInfo(fh=inode, keep_cache=False)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return bytes(self._node(fh).data[off : off + size])

    def _grow(self, node: Node, size: int) -> None:
        """Take room for growing `node` to `size` bytes, or fail as a full disk does."""
        growth = size - len(node.data)
        if growth > 0:
            if growth > self.room:
                raise pyfuse3.FUSEError(errno.ENOSPC)
            self.room -= growth

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        node = self._node(fh)
        self._grow(node, max(len(node.data), off + len(buf)))
        if off > len(node.data):
            node.data.extend(bytes(off - len(node.data)))
        node.data[off : off + len(buf)] = buf
        node.mtime_ns = time.time_ns()
        return len(buf)

    async def flush(self, fh: int) -> None:
        """Closing is not syncing."""

    async def release(self, fh: int) -> None:
        pass

    async def fsync(self, fh: int, datasync: bool) -> None:
        self._sync_file(fh)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        self._dir(inode)
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = sorted(self._dir(fh).items())
        for index, (name, ino) in enumerate(entries[start_id:], start_id + 1):
            if not pyfuse3.readdir_reply(token, name, self._attr(ino), index):
                return

    async def releasedir(self, fh: int) -> None:
        pass

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        self._sync_dir(fh)

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        if self._node(self._child(parent_inode, name)).is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        del self._dir(parent_inode)[name]
        self._node(parent_inode).mtime_ns = time.time_ns()

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        entries = self._node(self._child(parent_inode, name)).entries
        if entries is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if entries:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        del self._dir(parent_inode)[name]
        self._node(parent_inode).mtime_ns = time.time_ns()

    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        ino = self._child(parent_inode_old, name_old)
        node = self._node(ino)
        target_entries = self._dir(parent_inode_new)
        existing = target_entries.get(name_new)
        if existing == ino:
            return
        if existing is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise pyfuse3.FUSEError(errno.EEXIST)
            replaced = self._node(existing)
            if node.is_dir and not replaced.is_dir:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            if replaced.is_dir and not node.is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if replaced.entries:
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        if node.is_dir:  # never into its own subtree
            above = parent_inode_new
            while True:
                if above == ino:
                    raise pyfuse3.FUSEError(errno.EINVAL)
                if above == ROOT:
                    break
                above = self._node(above).parent
            node.parent = parent_inode_new
        del self._dir(parent_inode_old)[name_old]
        target_entries[name_new] = ino
        now = time.time_ns()
        self._node(parent_inode_old).mtime_ns = self._node(parent_inode_new).mtime_ns = now

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        disk = os.statvfs(self.backing)
        data = pyfuse3.StatvfsData()
        for name in (
            "f_bsize",
            "f_frsize",
            "f_blocks",
            "f_bfree",
            "f_bavail",
            "f_files",
            "f_ffree",
            "f_favail",
            "f_namemax",
        ):
            setattr(data, name, getattr(disk, name))
        return data


def _read_room(path: str) -> float | None:
    """The capacity control file's number, or None for unlimited (missing or empty)."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    return float(int(text)) if text else None


async def _watch_capacity(fs: PowerCutFS, path: str) -> None:
    seen: float | None = None
    while True:
        try:
            room = _read_room(path)
        except ValueError:  # being written: read it again next time
            room = seen
        if room != seen:
            seen = room
            fs.room = math.inf if room is None else room
        await trio.sleep(0.1)


async def _serve(fs: PowerCutFS) -> None:
    parent = os.getppid()

    async def cut_on_signal() -> None:
        with trio.open_signal_receiver(signal.SIGUSR1, signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if signum == signal.SIGUSR1:
                    os._exit(0)  # the power cut: between two requests, memory gone
                pyfuse3.terminate()
                return

    async def orphaned() -> None:
        while os.getppid() == parent:
            await trio.sleep(0.5)
        pyfuse3.terminate()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cut_on_signal)
        nursery.start_soon(orphaned)
        capacity = os.environ.get("POWERCUT_CAPACITY_FILE")
        if capacity:
            nursery.start_soon(_watch_capacity, fs, capacity)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def run(mountpoint: str, backing: str) -> None:
    fs = PowerCutFS(backing)
    options = set(pyfuse3.default_options)
    options.add("fsname=powercut")
    pyfuse3.init(fs, mountpoint, options)
    print("mounted", flush=True)
    try:
        trio.run(_serve, fs)
    finally:
        pyfuse3.close(unmount=True)


def zygote() -> None:
    """`fs.py --zygote`: pays Python's start and the imports once, then forks one file system
    per mount (a randomized suite cuts hundreds of times; a new interpreter each time costs
    most of a second on a busy machine). Commands on stdin, one a line, tab-separated:
    `mount MOUNTPOINT BACKING` (the child prints `mounted`), `cut` (SIGUSR1: the power cut),
    `stop` (SIGTERM: a clean unmount), `wait` (after an external unmount); the last three
    answer with their own name once the child is reaped. EOF (the test is gone) stops it."""
    child = 0

    def end(signum: int | None) -> None:
        nonlocal child
        if child:
            if signum is not None:
                os.kill(child, signum)
            os.waitpid(child, 0)
            child = 0

    for line in sys.stdin:
        command, *args = line.rstrip("\n").split("\t")
        if command == "mount":
            end(signal.SIGTERM)
            sys.stdout.flush()
            child = os.fork()
            if child == 0:
                code = 0
                try:
                    run(*args)
                except BaseException:
                    traceback.print_exc()
                    print("failed", flush=True)
                    code = 1
                finally:
                    os._exit(code)
        elif command in ("cut", "stop", "wait"):
            end({"cut": signal.SIGUSR1, "stop": signal.SIGTERM, "wait": None}[command])
            print(command, flush=True)
    end(signal.SIGTERM)


def main() -> None:
    if sys.argv[1:] == ["--zygote"]:
        zygote()
    else:
        run(sys.argv[1], sys.argv[2])


if __name__ == "__main__":
    main()
