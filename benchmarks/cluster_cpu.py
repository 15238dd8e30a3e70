"""The CPU time of every process of a command (a ``fastbptt train --cluster local:N`` run: the
client with the scheduler, the workers), read from /proc while it runs (Linux).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/cluster_cpu.py \
        fastbptt train --batch 64 --steps 300 --max-chars 300000 --eval-every 1000 \
        --sample-len 0 --no-progress --out OUT --cluster local:2

Prints the end of the command's output, its wall time, and each process's CPU seconds (user +
system) with its command line. Run it at two step counts and take the differences: what each
process spends on the steps between, start-up and evaluation left out.
"""
import os
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def parents():
    """{pid: parent pid} of every process."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    table[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return table


def descendants(pid, table):
    found = [pid]
    for child, parent in table.items():
        if parent == pid:
            found += descendants(child, table)
    return found


def cpu_and_command(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open(f"/proc/{pid}/cmdline") as f:
        command = f.read().replace("\0", " ")[:110]
    return (int(fields[11]) + int(fields[12])) / TICK, command


def main(argv):
    start = time.time()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = {}
    while proc.poll() is None:
        for pid in descendants(proc.pid, parents()):
            try:
                seen[pid] = cpu_and_command(pid)
            except OSError:
                pass                # ended between the listing and the reading
        time.sleep(0.1)
    print(proc.stdout.read()[-1500:])
    print(f"wall {time.time() - start:.1f} s")
    for pid, (cpu, command) in sorted(seen.items()):
        print(f"{pid:>8} {cpu:7.2f} s  {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
