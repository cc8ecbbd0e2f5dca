package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
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

// policyDoc is the file form of a policy, YAML or JSON:
//
//	rules:
//	  - resource: transit/keys/payments-*
//	    capabilities: [encrypt, decrypt]
//	  - resource: transit/keys/payments-legacy
//	    capabilities: [encrypt]
//	    effect: deny
type policyDoc struct {
	Rules []struct {
		Resource     string   `yaml:"resource" json:"resource"`
		Capabilities []string `yaml:"capabilities" json:"capabilities"`
		Effect       string   `yaml:"effect" json:"effect"`
	} `yaml:"rules" json:"rules"`
}

// ParsePolicyDocument parses a YAML (or JSON) policy document into a validated
// policy named name. Unknown fields, capabilities and effects are refused.
func ParsePolicyDocument(name string, doc []byte) (*hsmgatev1.Policy, error) {
	if len(doc) > maxPolicyDocLen {
		return nil, fmt.Errorf("%w: policy document over %d bytes", ErrInvalid, maxPolicyDocLen)
	}
	var d policyDoc
	dec := yaml.NewDecoder(strings.NewReader(string(doc)))
	dec.KnownFields(true)
	if err := dec.Decode(&d); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: policy document: %v", ErrInvalid, err)
	}
	p := &hsmgatev1.Policy{Name: name}
	for _, r := range d.Rules {
		var eff hsmgatev1.PolicyEffect
		switch strings.ToLower(r.Effect) {
		case "", "allow":
			eff = hsmgatev1.PolicyEffect_POLICY_EFFECT_ALLOW
		case "deny":
			eff = hsmgatev1.PolicyEffect_POLICY_EFFECT_DENY
		default:
			return nil, fmt.Errorf("%w: effect %q (want allow or deny)", ErrInvalid, r.Effect)
		}
		p.Rules = append(p.Rules, &hsmgatev1.PolicyRule{Resource: r.Resource, Capabilities: r.Capabilities, Effect: eff})
	}
	if err := ValidatePolicy(p); err != nil {
		return nil, err
	}
	return p, nil
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
		res := r.GetResource()
		if res == "" || len(res) > maxResourceLen {
			return fmt.Errorf("%w: rule %d: resource must be 1..%d bytes", ErrInvalid, i+1, maxResourceLen)
		}
		for j := 0; j < len(res); j++ {
			if res[j] < 0x21 || res[j] > 0x7e {
				return fmt.Errorf("%w: rule %d: resource has a space or non-printable byte", ErrInvalid, i+1)
			}
		}
		if len(r.GetCapabilities()) == 0 {
			return fmt.Errorf("%w: rule %d: no capabilities", ErrInvalid, i+1)
		}
		for _, c := range r.GetCapabilities() {
			if !Capability(c).Valid() {
				return fmt.Errorf("%w: rule %d: unknown capability %q", ErrInvalid, i+1, c)
			}
		}
		switch r.GetEffect() {
		case hsmgatev1.PolicyEffect_POLICY_EFFECT_UNSPECIFIED, hsmgatev1.PolicyEffect_POLICY_EFFECT_ALLOW, hsmgatev1.PolicyEffect_POLICY_EFFECT_DENY:
		default:
			return fmt.Errorf("%w: rule %d: unknown effect", ErrInvalid, i+1)
		}
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
	cache *watchedCache[*compiledPolicy] // nil value: known absent
}

// NewPolicies returns a policy store over s; its cache watches s until ctx is done.
func NewPolicies(ctx context.Context, s keystore.Store) (*Policies, error) {
	c, err := newWatchedCache[*compiledPolicy](ctx, s, PolicyPrefix, 10000)
	if err != nil {
		return nil, fmt.Errorf("auth: watch policies: %w", err)
	}
	return &Policies{store: s, now: time.Now, cache: c}, nil
}

// lookup returns the compiled policy (nil when absent).
func (p *Policies) lookup(ctx context.Context, name string) (*compiledPolicy, error) {
	c, ok, gen := p.cache.get(name)
	if ok {
		return c, nil
	}
	pol, err := p.Get(ctx, name)
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrInvalid):
		c = nil
	case err != nil:
		return nil, err
	default:
		c = compile(pol)
	}
	p.cache.put(name, c, gen)
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
	p.cache.invalidate(pol.GetName())
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
	p.cache.invalidate(name)
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
