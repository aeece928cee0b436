# Flattens a JSON document into one line per scalar: "<path>\t<value>", the path's parts
# joined by "." (object keys; array indexes from 0), strings left as written (escapes kept,
# so that a value can be put back into JSON as is), literals and numbers as written.
# busybox awk, in the demo guest: it has no other JSON parser.
function ws() {
    while (pos <= n && index(" \t\r\n", substr(s, pos, 1))) pos++
}
function str(    start, c) {
    pos++
    start = pos
    while (pos <= n) {
        c = substr(s, pos, 1)
        if (c == "\\") { pos += 2; continue }
        if (c == "\"") break
        pos++
    }
    pos++
    return substr(s, start, pos - start - 1)
}
function join(path, key) {
    return path == "" ? key : path "." key
}
function value(path,    c, key, i, start) {
    ws()
    c = substr(s, pos, 1)
    if (c == "{") {
        pos++; ws()
        if (substr(s, pos, 1) == "}") { pos++; return }
        while (pos <= n) {
            ws(); key = str(); ws(); pos++  # the colon
            value(join(path, key)); ws()
            c = substr(s, pos, 1); pos++
            if (c != ",") return
        }
    } else if (c == "[") {
        pos++; ws()
        if (substr(s, pos, 1) == "]") { pos++; return }
        for (i = 0; pos <= n; i++) {
            value(join(path, i)); ws()
            c = substr(s, pos, 1); pos++
            if (c != ",") return
        }
    } else if (c == "\"") {
        print path "\t" str()
    } else {
        start = pos
        while (pos <= n && !index(",]} \t\r\n", substr(s, pos, 1))) pos++
        print path "\t" substr(s, start, pos - start)
    }
}
{ s = s $0 "\n" }
END { n = length(s); pos = 1; value("") }
