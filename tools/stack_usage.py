#!/usr/bin/env python3
"""Worst-case stack use of kpalloc's exported functions in a linked ELF.

usage: stack_usage.py ELF LIMIT_BYTES

Reads x86-64 (ELF64, EM_X86_64) and i386 (ELF32, EM_386) images. A word (a
push, a return address, a GOT slot, a .stack_sizes address) is 8 bytes on
x86-64 and 4 on i386.

Frame sizes come from LLVM's .stack_sizes section (a library built with
-Zemit-stack-sizes) where it has an entry, plus what the code pushes below
that frame (i386 pushes a call's arguments; .stack_sizes leaves them out);
otherwise (the precompiled core, the kernel's mem* functions, or a library
built without it) from the disassembly: every push plus every `sub $N,%rsp`
(`%esp` on i386), a safe over-estimate. The call graph is read from
`objdump -d` (calls, and jumps to another function's first byte: tail
calls). Indirect calls are the kernel's hooks (irq_save, irq_restore, panic,
on_misuse): their own stack use is the kernel's and is not counted, the depth
at which they are called is shown.

The figure for an export is what a call to it adds to the caller's stack:
its return address, its frame, and the deepest chain of calls below it
(a word of return address per call). Fails on recursion or above LIMIT.
"""
import re
import struct
import subprocess
import sys

# Per ELF class (e_ident[EI_CLASS]): the machine it must be (e_machine), the
# word size, where e_shoff and e_shentsize/e_shnum/e_shstrndx are, the section
# header and symbol layouts (symbol fields in file order), the stack pointer
# and the registers a call clobbers (as reg_key names them).
ARCHS = {
    1: dict(machine=3, word=4, shoff=0x20, shentsize=0x2E,
            shdr="<IIIIIIIIII", sym="<IIIBBH", sym_fields=("name", "value", "size", "info", "other", "shndx"),
            sp="esp", scratch=("ax", "cx", "dx")),
    2: dict(machine=62, word=8, shoff=0x28, shentsize=0x3A,
            shdr="<IIQQQQIIQQ", sym="<IBBHQQ", sym_fields=("name", "info", "other", "shndx", "value", "size"),
            sp="rsp", scratch=("ax", "cx", "dx", "si", "di", "r8", "r9", "r10", "r11")),
}
WORD = {4: "<I", 8: "<Q"}


def elf_arch(data):
    arch = ARCHS.get(data[4]) if data[:4] == b"\x7fELF" else None
    if arch is None or struct.unpack_from("<H", data, 0x12)[0] != arch["machine"]:
        sys.exit("stack: not an x86-64 (ELF64) or i386 (ELF32) image")
    return arch


def sections(data, arch):
    shoff, = struct.unpack_from(WORD[arch["word"]], data, arch["shoff"])
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, arch["shentsize"])
    heads = []
    for i in range(shnum):
        name, kind, flags, addr, off, size, link, info, align, entsize = struct.unpack_from(
            arch["shdr"], data, shoff + i * shentsize)
        heads.append(dict(name=name, kind=kind, addr=addr, off=off, size=size, link=link, entsize=entsize))
    strtab = heads[shstrndx]
    for h in heads:
        end = data.index(b"\0", strtab["off"] + h["name"])
        h["name"] = data[strtab["off"] + h["name"]:end].decode()
    return heads


def function_symbols(data, heads, arch):
    """address -> name of every STT_FUNC symbol, and address -> size."""
    names, sizes = {}, {}
    entry = struct.calcsize(arch["sym"])
    for h in heads:
        if h["kind"] != 2:  # SHT_SYMTAB
            continue
        strtab = heads[h["link"]]
        for i in range(h["size"] // entry):
            sym = dict(zip(arch["sym_fields"], struct.unpack_from(arch["sym"], data, h["off"] + i * entry)))
            name, info, value, size = sym["name"], sym["info"], sym["value"], sym["size"]
            if info & 0xF != 2 or sym["shndx"] == 0:  # STT_FUNC, defined
                continue
            end = data.index(b"\0", strtab["off"] + name)
            label = data[strtab["off"] + name:end].decode()
            # Prefer a global name for an address.
            if value not in names or info >> 4 == 1:
                names[value] = label
            sizes[value] = max(size, sizes.get(value, 0))
    return names, sizes


def stack_sizes(data, heads, word):
    """address -> frame size: entries are a word of address and a ULEB128 size."""
    sizes = {}
    for h in heads:
        if h["name"] != ".stack_sizes":
            continue
        raw = data[h["off"]:h["off"] + h["size"]]
        i = 0
        while i < len(raw):
            addr, = struct.unpack_from(WORD[word], raw, i)
            i += word
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
TARGET = re.compile(r"^([0-9a-f]+) <(.+)>$")
MEMORY = re.compile(r"^(-?0x[0-9a-f]+)?(?:\(%(\w+)\))?$")  # disp, disp(%base) or (%base)
READ_ONLY = re.compile(r"^(cmp|test|bt|push)[bwlq]?$")  # ops that do not write their last operand
# Registers (reg_key) that instructions write without naming them.
IMPLICIT = ((re.compile(r"^(i?mul|i?div)[bwlq]?$|^(cltd|cqto|rdtsc|rdmsr|cmpxchg(8|16)b)$"), ("ax", "dx")),
            (re.compile(r"^(cltq|cwtl|cmpxchg[bwlq]?)$"), ("ax",)),
            (re.compile(r"^cpuid$"), ("ax", "bx", "cx", "dx")))


def read_word(data, heads, addr, word):
    """The word at virtual address `addr` of the linked image (a GOT slot)."""
    for h in heads:
        if h["addr"] and h["kind"] == 1 and h["addr"] <= addr < h["addr"] + h["size"]:
            return struct.unpack_from(WORD[word], data, h["off"] + addr - h["addr"])[0]
    return None


def reg_key(name):
    """The register a name is part of: rax, eax, ax, al -> ax; r8d -> r8; sil -> si."""
    m = re.match(r"^(r\d+)[dwb]?$", name)
    if m:
        return m.group(1)
    if len(name) == 3 and name[0] in "re":
        return name[1:]
    if name in ("sil", "dil", "bpl", "spl"):
        return name[:2]
    if len(name) == 2 and name[0] in "abcd" and name[1] in "lhx":
        return name[0] + "x"
    return name


def written(op, args, arch):
    """reg_key of the registers an instruction may write."""
    out = set(arch["scratch"]) if op.startswith("call") else set()
    last = re.search(r"(?:^|,)%(\w+)$", args)  # the destination, if a register
    if last and not READ_ONLY.match(op):
        out.add(reg_key(last.group(1)))
    if op.startswith(("xchg", "xadd")):
        out.update(reg_key(r) for r in re.findall(r"%(\w+)", args))
    if op.startswith("rep") or "%es:" in args:  # string instructions
        out.update(("si", "di", "cx"))
    for pattern, regs in IMPLICIT:
        if pattern.match(op):
            out.update(regs)
    return out


def stack_step(op, args, arch):
    """Bytes an instruction moves the stack pointer down (negative: up)."""
    word, sp = arch["word"], "%" + arch["sp"]
    if op.startswith("push"):
        return word
    if re.match(r"^pop[lqwf]?$", op):
        return -word
    imm = re.match(r"^\$0x([0-9a-f]+)," + sp + "$", args)
    if op in ("sub", "add") and imm:
        value = int(imm.group(1), 16)
        value -= (value >> (8 * word - 1)) << 8 * word  # signed
        return value if op == "sub" else -value
    lea = re.match(r"^(-?0x[0-9a-f]+)\(" + sp + r"\)," + sp + "$", args)
    return -int(lea.group(1), 16) if op == "lea" and lea else 0


def below_frame(steps, frame):
    """How far code goes below a frame of `frame` bytes (from .stack_sizes).

    `steps`: the stack pointer moves in code order, of which the first `frame`
    bytes down are the frame. What is pushed beyond it is the arguments of a
    call: i386 pushes them, and .stack_sizes does not count them. A call's
    arguments are pushed and popped within a block: none are left where one
    starts (step None), e.g. after a call that does not return.
    """
    run = deepest = 0
    for step in steps:
        if step is None:
            run = 0
        elif step > 0:
            used = min(step, frame)
            frame -= used
            run += step - used
        else:
            run = max(0, run + step)
        deepest = max(deepest, run)
    return deepest


def disassemble(path, data, heads, names, arch):
    """address -> {steps, calls: set((addr, is_call)), indirect} from objdump.

    steps: how the instructions move the stack pointer (stack_step), in code
    order, None where a block starts (a jump target, or after a jump or return).

    Calls through a register or memory are resolved where the target is known
    at link time, following register values along the code: `movabs $f,%reg`,
    `mov $f,%reg` or `lea f(%rip),%reg` then `call *%reg`; `call *f@GOTPCREL(%rip)` or `mov
    f@GOTPCREL(%rip),%reg; call *%reg` (x86-64 PIC: the GOT slot of a static
    link holds f); and on i386 `call *f@GOT(%reg)` or `mov f@GOT(%reg),%r2;
    call *%r2` with %reg set up by `call __x86.get_pc_thunk.reg` or `call 1f;
    1: pop %reg`, then `add $_GLOBAL_OFFSET_TABLE_-.,%reg`. The rest are
    counted as calls of the kernel's hooks.
    """
    word, mask = arch["word"], (1 << 8 * arch["word"]) - 1
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-w", path],
                         check=True, capture_output=True, text=True).stdout
    funcs = {}
    current, after_call = None, None
    for line in out.splitlines():
        head = re.match(r"^([0-9a-f]+) <(.+)>:$", line)
        if head:
            addr = int(head.group(1), 16)
            if addr in names:
                current = funcs.setdefault(addr, dict(steps=[], labels=set(), calls=set(), indirect=0,
                                                      regs={}))
            after_call = None
            continue
        m = INSN.match(line)
        if not m or current is None:
            continue
        addr, op, args = int(m.group(1), 16), m.group(2), m.group(3).strip()
        comment = re.search(r"#\s*([0-9a-f]+)", args)
        args = args.split("#")[0].strip()
        regs = current["regs"]
        if addr in current["labels"]:
            current["steps"].append(None)  # a jump target: a new block

        def address(operand):
            """The address of a memory operand, where it is known."""
            mem = MEMORY.match(operand)
            if not mem or not (mem.group(1) or mem.group(2)):
                return None
            disp = int(mem.group(1) or "0", 16)
            if mem.group(2) is None:
                return disp & mask
            if mem.group(2) == "rip":
                return int(comment.group(1), 16) if comment else None
            base = regs.get(reg_key(mem.group(2)))
            return None if base is None else (base + disp) & mask

        # `addr` is the return address of a call just before: the PIC base.
        called, after_call = after_call, None
        if called:
            thunk = re.match(r"^__x86\.get_pc_thunk\.(\w+)$", called[1])
            if thunk:
                regs[reg_key(thunk.group(1))] = addr
            elif called[0] == addr and op == "pop" and args.startswith("%"):
                regs[reg_key(args[1:])] = addr
                current["steps"].append(-word)
                continue
        is_call = op.startswith("call")
        mov = re.match(r"^\$0x([0-9a-f]+),%(\w+)$", args)
        if op in ("movabs", "mov") and mov:
            regs[reg_key(mov.group(2))] = int(mov.group(1), 16)
            continue
        if op == "add" and mov and regs.get(reg_key(mov.group(2))) is not None:
            key = reg_key(mov.group(2))
            regs[key] = (regs[key] + int(mov.group(1), 16)) & mask
            continue
        load = re.match(r"^(.+),%(\w+)$", args)
        if op == "mov" and load and address(load.group(1)) is not None:
            regs[reg_key(load.group(2))] = read_word(data, heads, address(load.group(1)), word)
            continue
        if op == "lea" and load and address(load.group(1)) is not None:
            regs[reg_key(load.group(2))] = address(load.group(1))
            continue
        step = stack_step(op, args, arch)
        if step:
            current["steps"].append(step)
        elif is_call or op.startswith("j"):
            if args.startswith("*"):
                if args.startswith("*%"):
                    target = regs.get(reg_key(args[2:]))
                else:
                    slot = address(args[1:])
                    target = None if slot is None else read_word(data, heads, slot, word)
                if target in names:
                    current["calls"].add((target, is_call))
                elif is_call:
                    current["indirect"] += 1
                # else: a jump table inside the function
            else:
                t = TARGET.match(args)
                if t:
                    target = int(t.group(1), 16)
                    if target in names and (is_call or target not in funcs or funcs[target] is not current):
                        current["calls"].add((target, is_call))
                    elif is_call:
                        # A call into the function itself (i386 PIC: `call 1f; 1: pop %reg`)
                        # leaves its return address on the stack: count it as a push.
                        current["steps"].append(word)
                    if is_call:
                        after_call = (target, t.group(2))
                    else:
                        current["labels"].add(target)
        if op.startswith(("ret", "jmp")):
            current["steps"].append(None)
        for key in written(op, args, arch):
            regs.pop(key, None)
    return funcs


def main():
    path, limit = sys.argv[1], int(sys.argv[2])
    data = open(path, "rb").read()
    arch = elf_arch(data)
    word = arch["word"]
    heads = sections(data, arch)
    names, _ = function_symbols(data, heads, arch)
    llvm = stack_sizes(data, heads, word)
    funcs = disassemble(path, data, heads, names, arch)
    for addr, f in funcs.items():
        if addr in llvm:
            f["frame"], f["how"] = llvm[addr] + below_frame(f["steps"], llvm[addr]), "stack_sizes"
        else:
            f["frame"], f["how"] = sum(step for step in f["steps"] if step and step > 0), "disasm"

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
                below = depth(target)[0] + (word if is_call else -f["frame"])
                if below > best:
                    best = below
                    deepest[addr] = target
            hook = f["frame"] + word if f["indirect"] else 0
            best = f["frame"] + max(best, 0)
            # Deepest point at which a kernel hook is entered.
            for target, is_call in f["calls"]:
                if target != addr:
                    sub_hook = depth(target)[1]
                    if sub_hook:
                        hook = max(hook, f["frame"] + (word if is_call else -f["frame"]) + sub_hook)
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
        total = word + below  # the caller's return address
        hook_note = f", kernel hooks entered at {word + hook} bytes" if hook else ""
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
