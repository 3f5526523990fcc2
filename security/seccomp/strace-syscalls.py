import re,collections,sys
def parse(path):
    started=set(); calls=set()
    for line in open(path):
        m=re.match(r'(\d+)\s+(?:<\.\.\. )?([a-z0-9_]+)(?:\(| resumed>)(.*)',line)
        if not m: continue
        pid,sc,rest=m.groups()
        if sc=='execve' and re.match(r'"[^"]*nettel-loader"',rest): started.add(pid)
        if pid in started:
            calls.add(sc)
            if sc in ('clone','clone3','fork','vfork'):
                c=re.search(r'(?:= |parent_tid=\[)(\d+)',rest)
                if c: started.add(c.group(1))
    return calls
allc=set()
for f in sys.argv[1:]:
    c=parse(f); allc|=c; print(f, len(c), ' '.join(sorted(c)))
print('ALL', len(allc), ' '.join(sorted(allc)))
