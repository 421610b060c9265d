#!/usr/bin/env python3
"""Worst-case stack use of kpalloc's exported functions in a linked ELF.

usage: stack_usage.py ELF LIMIT_BYTES

Frame sizes come from LLVM's .stack_sizes section (a library built with
-Zemit-stack-sizes) where it has an entry; otherwise (the precompiled core,
the kernel's mem* functions, or a library built without it) from the
disassembly: every push plus the largest `sub $N,%rsp`, a safe over-estimate.
The call graph is read from `objdump -d` (calls, and jumps to another
function's first byte: tail calls). Indirect calls are the kernel's hooks
(irq_save, irq_restore, panic, on_misuse): their own stack use is the
kernel's and is not counted, the depth at which they are called is shown.

The figure for an export is what a call to it adds to the caller's stack:
its return address, its frame, and the deepest chain of calls below it
(8 bytes of return address per call). Fails on recursion or above LIMIT.
"""
import re
import struct
import subprocess
import sys


def sections(data):
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    heads = []
    for i in range(shnum):
        name, kind, flags, addr, off, size, link, info, align, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", data, shoff + i * shentsize)
        heads.append(dict(name=name, kind=kind, addr=addr, off=off, size=size, link=link, entsize=entsize))
    strtab = heads[shstrndx]
    for h in heads:
        end = data.index(b"\0", strtab["off"] + h["name"])
        h["name"] = data[strtab["off"] + h["name"]:end].decode()
    return heads


def function_symbols(data, heads):
    """address -> name of every STT_FUNC symbol, and address -> size."""
    names, sizes = {}, {}
    for h in heads:
        if h["kind"] != 2:  # SHT_SYMTAB
            continue
        strtab = heads[h["link"]]
        for i in range(h["size"] // 24):
            name, info, other, shndx, value, size = struct.unpack_from("<IBBHQQ", data, h["off"] + i * 24)
            if info & 0xF != 2 or shndx == 0:  # STT_FUNC, defined
                continue
            end = data.index(b"\0", strtab["off"] + name)
            sym = data[strtab["off"] + name:end].decode()
            # Prefer a global name for an address.
            if value not in names or info >> 4 == 1:
                names[value] = sym
            sizes[value] = max(size, sizes.get(value, 0))
    return names, sizes


def stack_sizes(data, heads):
    sizes = {}
    for h in heads:
        if h["name"] != ".stack_sizes":
            continue
        raw = data[h["off"]:h["off"] + h["size"]]
        i = 0
        while i < len(raw):
            addr, = struct.unpack_from("<Q", raw, i)
            i += 8
            value, shift = 0, 0
            while True:
                byte = raw[i]
                i += 1
                value |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            if addr:
                sizes[addr] = value
    return sizes


INSN = re.compile(r"^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$")
TARGET = re.compile(r"^([0-9a-f]+) <([^>+]+)>$")


def read64(data, heads, addr):
    """The 8 bytes at virtual address `addr` of the linked image (a GOT slot)."""
    for h in heads:
        if h["addr"] and h["kind"] == 1 and h["addr"] <= addr < h["addr"] + h["size"]:
            return struct.unpack_from("<Q", data, h["off"] + addr - h["addr"])[0]
    return None


def disassemble(path, data, heads, names):
    """address -> {pushes, sub, calls: set((addr, is_call)), indirect} from objdump.

    Calls through a register or memory are resolved where the target is known
    at link time: `movabs $f,%reg; call *%reg` (large code model), and
    `call *f@GOTPCREL(%rip)` or `mov f@GOTPCREL(%rip),%reg; call *%reg`
    (PIC: the GOT slot of a static link holds f). The rest are counted as
    calls of the kernel's hooks.
    """
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-w", path],
                         check=True, capture_output=True, text=True).stdout
    funcs = {}
    current = None
    for line in out.splitlines():
        head = re.match(r"^([0-9a-f]+) <(.+)>:$", line)
        if head:
            addr = int(head.group(1), 16)
            if addr in names:
                current = funcs.setdefault(addr, dict(pushes=0, sub=0, calls=set(), indirect=0, regs={}))
            continue
        m = INSN.match(line)
        if not m or current is None:
            continue
        op, args = m.group(2), m.group(3).strip()
        comment = re.search(r"#\s*([0-9a-f]+)", args)
        args = args.split("#")[0].strip()
        is_call = op.startswith("call")
        mov = re.match(r"^\$0x([0-9a-f]+),%(\w+)$", args)
        if op == "movabs" and mov:
            current["regs"][mov.group(2)] = int(mov.group(1), 16)
            continue
        load = re.match(r"^-?0x[0-9a-f]+\(%rip\),%(\w+)$", args)
        if op == "mov" and load and comment:
            current["regs"][load.group(1)] = read64(data, heads, int(comment.group(1), 16))
            continue
        if op.startswith("push"):
            current["pushes"] += 8
        elif op == "sub" and args.endswith(",%rsp") and args.startswith("$"):
            current["sub"] = max(current["sub"], int(args[1:].split(",")[0], 16))
        elif is_call or op.startswith("j"):
            if args.startswith("*"):
                target = None
                if args.startswith("*%"):
                    target = current["regs"].get(args[2:])
                elif "(%rip)" in args and comment:
                    target = read64(data, heads, int(comment.group(1), 16))
                if target in names:
                    current["calls"].add((target, is_call))
                elif is_call:
                    current["indirect"] += 1
                # else: a jump table inside the function
                continue
            t = TARGET.match(args)
            if t:
                target = int(t.group(1), 16)
                if target in names and (is_call or target not in funcs or funcs[target] is not current):
                    current["calls"].add((target, is_call))
    return funcs


def main():
    path, limit = sys.argv[1], int(sys.argv[2])
    data = open(path, "rb").read()
    heads = sections(data)
    names, _ = function_symbols(data, heads)
    llvm = stack_sizes(data, heads)
    funcs = disassemble(path, data, heads, names)
    for addr, f in funcs.items():
        if addr in llvm:
            f["frame"], f["how"] = llvm[addr], "stack_sizes"
        else:
            f["frame"], f["how"] = f["pushes"] + f["sub"], "disasm"

    memo, active, deepest = {}, set(), {}

    def depth(addr):
        """Bytes below the return address into `addr`: frame + deepest callee."""
        if addr in memo:
            return memo[addr]
        if addr in active:
            raise RecursionError(names.get(addr, hex(addr)))
        active.add(addr)
        f = funcs.get(addr)
        best, hook = 0, 0
        if f:
            for target, is_call in f["calls"]:
                if target == addr:
                    continue
                # A call pushes a return address; a tail call reuses the frame.
                below = depth(target)[0] + (8 if is_call else -f["frame"])
                if below > best:
                    best = below
                    deepest[addr] = target
            hook = f["frame"] + 8 if f["indirect"] else 0
            best = f["frame"] + max(best, 0)
            # Deepest point at which a kernel hook is entered.
            for target, is_call in f["calls"]:
                if target != addr:
                    sub_hook = depth(target)[1]
                    if sub_hook:
                        hook = max(hook, f["frame"] + (8 if is_call else -f["frame"]) + sub_hook)
        active.discard(addr)
        memo[addr] = (best, hook)
        return memo[addr]

    exports = sorted((a, n) for a, n in names.items() if re.match(r"^(page_|kpalloc_)", n))
    if not exports:
        print("stack: no page_*/kpalloc_* functions in", path)
        return 1
    measured = sum(1 for a in funcs if a in llvm)
    print(f"stack: {len(funcs)} functions, {measured} with LLVM .stack_sizes, "
          f"{len(funcs) - measured} estimated from the disassembly; limit {limit} bytes")
    worst, failed = 0, False
    for addr, name in sorted(exports, key=lambda e: e[1]):
        try:
            below, hook = depth(addr)
        except RecursionError as error:
            print(f"stack: {name}: recursion through {error}: no static bound")
            failed = True
            continue
        total = 8 + below  # the caller's return address
        hook_note = f", kernel hooks entered at {8 + hook} bytes" if hook else ""
        print(f"stack: {name:<20} {total:5d} bytes (own frame {funcs[addr]['frame']}, "
              f"{funcs[addr]['how']}){hook_note}")
        worst = max(worst, total)
        if total > limit:
            failed = True
            chain, at = [], addr
            while at is not None:
                chain.append(f"{names.get(at, hex(at))} ({funcs[at]['frame'] if at in funcs else '?'})")
                at = deepest.get(at)
            print(f"stack:   over the limit; deepest path (frame bytes): {' -> '.join(chain)}")
    print(f"stack: worst export {worst} bytes (limit {limit})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
