package auth

// Match reports whether name matches the glob pattern. '*' matches any run of
// characters (including '/' and the empty run); every other byte matches itself.
// It runs in O(len(pattern)*len(name)) at worst, without recursion.
func Match(pattern, name string) bool {
	p, n := 0, 0
	starP, starN := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			starP, starN = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case starP >= 0:
			// Let the last star swallow one more byte and retry.
			starN++
			p, n = starP+1, starN
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
