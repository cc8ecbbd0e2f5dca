package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"gopkg.in/yaml.v3"

	"github.com/hsmgate/hsmgate/keystore"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// PolicyPrefix is the keystore prefix of policies.
const PolicyPrefix = "auth/policies/"

const (
	maxPolicyRules  = 1024
	maxResourceLen  = 512
	maxPolicyName   = 128
	maxPolicyDocLen = 1 << 20
)

// ParsePolicyDocument parses a YAML (or JSON) policy document into a validated
// policy named name. The file form is
//
//	rules:
//	  - resource: transit/keys/payments-*
//	    capabilities: [encrypt, decrypt]
//	  - resource: transit/keys/payments-legacy
//	    capabilities: [encrypt]
//	    effect: deny
//
// Unknown fields, capabilities and effects are refused; every error names
// the line and the field in words (ErrInvalid).
func ParsePolicyDocument(name string, doc []byte) (*hsmgatev1.Policy, error) {
	if len(doc) > maxPolicyDocLen {
		return nil, fmt.Errorf("%w: policy document over %d bytes", ErrInvalid, maxPolicyDocLen)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		return nil, fmt.Errorf("%w: policy document: %v", ErrInvalid, err)
	}
	p := &hsmgatev1.Policy{Name: name}
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		rules, err := parsePolicyTop(root.Content[0])
		if err != nil {
			return nil, err
		}
		p.Rules = rules
	}
	if err := ValidatePolicy(p); err != nil {
		return nil, err
	}
	return p, nil
}

// policyFieldError is an error about node n of a policy document.
func policyFieldError(n *yaml.Node, format string, args ...any) error {
	return fmt.Errorf("%w: policy document line %d: %s", ErrInvalid, n.Line, fmt.Sprintf(format, args...))
}

// yamlKindName names a node's kind for error messages.
func yamlKindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	default:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return fmt.Sprintf("the value %q", n.Value)
	}
}

// policyFields walks mapping n, refusing aliases, keys that are not plain
// words, fields given twice and fields not in known (what names the
// mapping in errors), and calls fn with each key and value.
func policyFields(n *yaml.Node, what string, known []string, fn func(key string, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return policyFieldError(n, "%s must be a mapping of %s, not %s", what, strings.Join(known, ", "), yamlKindName(n))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return policyFieldError(k, "%s: a field name must be a word, not %s", what, yamlKindName(k))
		}
		if !slices.Contains(known, k.Value) {
			hint := ""
			if s := closestWord(k.Value, known); s != "" {
				hint = fmt.Sprintf("; did you mean %q?", s)
			}
			return policyFieldError(k, "unknown field %q in %s (want %s)%s", k.Value, what, strings.Join(known, ", "), hint)
		}
		if seen[k.Value] {
			return policyFieldError(k, "field %q given twice in %s", k.Value, what)
		}
		seen[k.Value] = true
		if v.Kind == yaml.AliasNode {
			return policyFieldError(v, "field %q of %s: aliases (*name) are not allowed in a policy", k.Value, what)
		}
		if err := fn(k.Value, v); err != nil {
			return err
		}
	}
	return nil
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// parsePolicyTop reads the top mapping: rules.
func parsePolicyTop(top *yaml.Node) ([]*hsmgatev1.PolicyRule, error) {
	var rules []*hsmgatev1.PolicyRule
	err := policyFields(top, "the policy", []string{"rules"}, func(_ string, v *yaml.Node) error {
		if isNull(v) {
			return nil
		}
		if v.Kind != yaml.SequenceNode {
			return policyFieldError(v, "field \"rules\" must be a list of rules, not %s", yamlKindName(v))
		}
		if len(v.Content) > maxPolicyRules {
			return policyFieldError(v, "field \"rules\" has more than %d rules", maxPolicyRules)
		}
		for i, rn := range v.Content {
			r, err := parsePolicyRule(rn, i+1)
			if err != nil {
				return err
			}
			rules = append(rules, r)
		}
		return nil
	})
	return rules, err
}

// parsePolicyRule reads rule number i (from 1) and checks it.
func parsePolicyRule(n *yaml.Node, i int) (*hsmgatev1.PolicyRule, error) {
	what := fmt.Sprintf("rule %d", i)
	r := &hsmgatev1.PolicyRule{Effect: hsmgatev1.PolicyEffect_POLICY_EFFECT_ALLOW}
	scalar := func(field string, v *yaml.Node) (string, error) {
		if v.Kind != yaml.ScalarNode {
			return "", policyFieldError(v, "field %q of %s must be a single value, not %s", field, what, yamlKindName(v))
		}
		if isNull(v) {
			return "", nil
		}
		return v.Value, nil
	}
	err := policyFields(n, what, []string{"resource", "capabilities", "effect"}, func(field string, v *yaml.Node) error {
		switch field {
		case "resource":
			s, err := scalar(field, v)
			r.Resource = s
			return err
		case "capabilities":
			if isNull(v) {
				return nil
			}
			if v.Kind != yaml.SequenceNode {
				return policyFieldError(v, "field \"capabilities\" of %s must be a list such as [read, list], not %s", what, yamlKindName(v))
			}
			for _, c := range v.Content {
				s, err := scalar(field, c)
				if err != nil {
					return err
				}
				if !Capability(s).Valid() {
					return policyFieldError(c, "unknown capability %q in %s", s, what)
				}
				r.Capabilities = append(r.Capabilities, s)
			}
			return nil
		default: // effect
			s, err := scalar(field, v)
			if err != nil {
				return err
			}
			switch strings.ToLower(s) {
			case "", "allow":
			case "deny":
				r.Effect = hsmgatev1.PolicyEffect_POLICY_EFFECT_DENY
			default:
				return policyFieldError(v, "effect %q of %s (want allow or deny)", s, what)
			}
			return nil
		}
	})
	if err != nil {
		return nil, err
	}
	if err := validateRule(r); err != nil {
		return nil, policyFieldError(n, "%s: %v", what, err)
	}
	return r, nil
}

// closestWord is the word of words within two edits of s, if any.
func closestWord(s string, words []string) string {
	best, bestD := "", 3
	for _, w := range words {
		if d := editDistance(strings.ToLower(s), w); d < bestD {
			best, bestD = w, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of two short strings.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// FormatPolicyDocument renders p in the YAML form ParsePolicyDocument reads.
func FormatPolicyDocument(p *hsmgatev1.Policy) []byte {
	var b strings.Builder
	b.WriteString("rules:\n")
	for _, r := range p.GetRules() {
		fmt.Fprintf(&b, "  - resource: %q\n    capabilities: [%s]\n", r.GetResource(), strings.Join(r.GetCapabilities(), ", "))
		if r.GetEffect() == hsmgatev1.PolicyEffect_POLICY_EFFECT_DENY {
			b.WriteString("    effect: deny\n")
		}
	}
	return []byte(b.String())
}

// ValidName reports whether s is a valid policy name: [a-z0-9][a-z0-9._-]*, at most 128 bytes.
func ValidName(s string) bool {
	if s == "" || len(s) > maxPolicyName {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// ValidatePolicy checks a policy's name and rules.
func ValidatePolicy(p *hsmgatev1.Policy) error {
	if !ValidName(p.GetName()) {
		return fmt.Errorf("%w: policy name %q", ErrInvalid, p.GetName())
	}
	if len(p.GetRules()) > maxPolicyRules {
		return fmt.Errorf("%w: more than %d rules", ErrInvalid, maxPolicyRules)
	}
	for i, r := range p.GetRules() {
		if err := validateRule(r); err != nil {
			return fmt.Errorf("%w: rule %d: %v", ErrInvalid, i+1, err)
		}
	}
	return nil
}

// validateRule checks one rule: a printable resource, known capabilities
// (at least one), a known effect.
func validateRule(r *hsmgatev1.PolicyRule) error {
	res := r.GetResource()
	if res == "" || len(res) > maxResourceLen {
		return fmt.Errorf("resource must be 1..%d bytes", maxResourceLen)
	}
	for j := 0; j < len(res); j++ {
		if res[j] < 0x21 || res[j] > 0x7e {
			return errors.New("resource has a space or non-printable byte")
		}
	}
	if len(r.GetCapabilities()) == 0 {
		return errors.New("no capabilities")
	}
	for _, c := range r.GetCapabilities() {
		if !Capability(c).Valid() {
			return fmt.Errorf("unknown capability %q", c)
		}
	}
	switch r.GetEffect() {
	case hsmgatev1.PolicyEffect_POLICY_EFFECT_UNSPECIFIED, hsmgatev1.PolicyEffect_POLICY_EFFECT_ALLOW, hsmgatev1.PolicyEffect_POLICY_EFFECT_DENY:
	default:
		return errors.New("unknown effect")
	}
	return nil
}

// decision is the verdict of one policy on one request.
type decision int

const (
	noMatch decision = iota
	allow
	deny
)

type compiledRule struct {
	glob string
	caps map[Capability]bool
	deny bool
}

type compiledPolicy struct {
	rules []compiledRule
}

func compile(p *hsmgatev1.Policy) *compiledPolicy {
	c := &compiledPolicy{}
	for _, r := range p.GetRules() {
		cr := compiledRule{glob: r.GetResource(), caps: map[Capability]bool{}, deny: r.GetEffect() == hsmgatev1.PolicyEffect_POLICY_EFFECT_DENY}
		for _, k := range r.GetCapabilities() {
			cr.caps[Capability(k)] = true
		}
		c.rules = append(c.rules, cr)
	}
	return c
}

func (c *compiledPolicy) decide(capability Capability, resource string) decision {
	d := noMatch
	for _, r := range c.rules {
		if !r.caps[capability] || !Match(r.glob, resource) {
			continue
		}
		if r.deny {
			return deny
		}
		d = allow
	}
	return d
}

// Policies is the policy store: policies in the keystore, compiled and cached
// in memory, the cache invalidated by Watch.
type Policies struct {
	store keystore.Store
	now   func() time.Time
	cache *keystore.Cache[*compiledPolicy] // by PolicyPrefix + name; nil value: known absent
	// keys holds PolicyPrefix + name for the names looked up, so that a
	// request's policy check builds no string (at most maxCachedPolicies).
	keysMu sync.RWMutex
	keys   map[string]string
}

// key returns PolicyPrefix + name.
func (p *Policies) key(name string) string {
	p.keysMu.RLock()
	k, ok := p.keys[name]
	p.keysMu.RUnlock()
	if ok {
		return k
	}
	k = PolicyPrefix + name
	p.keysMu.Lock()
	if p.keys == nil || len(p.keys) >= maxCachedPolicies {
		p.keys = make(map[string]string)
	}
	p.keys[name] = k
	p.keysMu.Unlock()
	return k
}

// maxCachedPolicies bounds the policy cache (past it, it empties).
const maxCachedPolicies = 10000

// NewPolicies returns a policy store over s; its cache (configured by
// opts) watches s until ctx is done.
func NewPolicies(ctx context.Context, s keystore.Store, opts keystore.CacheOptions) (*Policies, error) {
	c, err := keystore.NewCache(keystore.CacheConfig[*compiledPolicy]{
		CacheOptions: opts,
		Name:         "policies",
		Store:        s,
		Prefixes:     []string{PolicyPrefix},
		MaxEntries:   maxCachedPolicies,
		Absent:       true,
		Decode: func(_ context.Context, e keystore.Entry, _ *compiledPolicy, _ bool) (*compiledPolicy, error) {
			pol := &hsmgatev1.Policy{}
			if err := proto.Unmarshal(e.Value, pol); err != nil {
				return nil, fmt.Errorf("auth: decode policy %q: %w", strings.TrimPrefix(e.Key, PolicyPrefix), err)
			}
			return compile(pol), nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("auth: watch policies: %w", err)
	}
	context.AfterFunc(ctx, c.Close)
	return &Policies{store: s, now: time.Now, cache: c}, nil
}

// CacheStats describes the policy cache (in sync, degraded counts).
func (p *Policies) CacheStats() keystore.CacheStats { return p.cache.Stats() }

// lookup returns the compiled policy (nil when absent).
func (p *Policies) lookup(ctx context.Context, name string) (*compiledPolicy, error) {
	if !ValidName(name) {
		return nil, nil
	}
	c, err := p.cache.Get(ctx, p.key(name))
	if err != nil {
		return nil, fmt.Errorf("auth: read policy %q: %w", name, err)
	}
	return c, nil
}

// Allowed reports whether the policies allow capability on resource: some
// rule allows it and none denies it. Unknown policy names grant nothing.
// It returns an error only when the store cannot be read.
func (p *Policies) Allowed(ctx context.Context, policies []string, capability Capability, resource string) (bool, error) {
	allowed := false
	for _, name := range policies {
		c, err := p.lookup(ctx, name)
		if err != nil {
			return false, err
		}
		if c == nil {
			continue
		}
		switch c.decide(capability, resource) {
		case deny:
			return false, nil
		case allow:
			allowed = true
		}
	}
	return allowed, nil
}

// Get reads a policy; ErrNotFound if absent.
func (p *Policies) Get(ctx context.Context, name string) (*hsmgatev1.Policy, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("%w: policy name %q", ErrInvalid, name)
	}
	e, err := p.store.Get(ctx, PolicyPrefix+name)
	if errors.Is(err, keystore.ErrNotFound) {
		return nil, fmt.Errorf("%w: policy %q", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("auth: read policy %q: %w", name, err)
	}
	pol := &hsmgatev1.Policy{}
	if err := proto.Unmarshal(e.Value, pol); err != nil {
		return nil, fmt.Errorf("auth: decode policy %q: %w", name, err)
	}
	return pol, nil
}

// Put validates and writes a policy (create or replace) and returns the stored form.
func (p *Policies) Put(ctx context.Context, pol *hsmgatev1.Policy) (*hsmgatev1.Policy, error) {
	if err := ValidatePolicy(pol); err != nil {
		return nil, err
	}
	pol = proto.Clone(pol).(*hsmgatev1.Policy)
	pol.UpdateTime = timestamppb.New(p.now())
	b, err := proto.Marshal(pol)
	if err != nil {
		return nil, fmt.Errorf("auth: encode policy: %w", err)
	}
	if _, err := p.store.Put(ctx, PolicyPrefix+pol.GetName(), b, keystore.AnyRevision); err != nil {
		return nil, fmt.Errorf("auth: write policy %q: %w", pol.GetName(), err)
	}
	p.cache.Invalidate(PolicyPrefix + pol.GetName())
	return pol, nil
}

// Delete removes a policy; ErrNotFound if absent.
func (p *Policies) Delete(ctx context.Context, name string) error {
	if !ValidName(name) {
		return fmt.Errorf("%w: policy name %q", ErrInvalid, name)
	}
	err := p.store.Delete(ctx, PolicyPrefix+name, keystore.AnyRevision)
	if errors.Is(err, keystore.ErrNotFound) {
		return fmt.Errorf("%w: policy %q", ErrNotFound, name)
	}
	if err != nil {
		return fmt.Errorf("auth: delete policy %q: %w", name, err)
	}
	p.cache.Invalidate(PolicyPrefix + name)
	return nil
}

// List returns the sorted names of all policies.
func (p *Policies) List(ctx context.Context) ([]string, error) {
	es, err := p.store.List(ctx, PolicyPrefix)
	if err != nil {
		return nil, fmt.Errorf("auth: list policies: %w", err)
	}
	names := make([]string, 0, len(es))
	for _, e := range es {
		names = append(names, strings.TrimPrefix(e.Key, PolicyPrefix))
	}
	sort.Strings(names)
	return names, nil
}
