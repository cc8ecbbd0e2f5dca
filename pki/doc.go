// Package pki is hsmgate's internal X.509 certificate authority: issuers whose
// private keys are non-extractable objects in the HSM (used only as
// crypto.Signer), roles that bound what may be issued, issuance (Issue, where
// the server makes the key pair, and Sign, for a CSR), revocation with full
// and delta CRLs, an OCSP responder (RFC 6960), and tidying of expired
// records. Service implements hsmgatev1.PKIServiceServer; Handler serves the
// public HTTP side (CA certificates and chains, CRLs, OCSP).
// How it fits with the rest (the data flow of an issuance and the store schema): docs/architecture.md.
//
// # Choices
//
//   - Certificates are built with Go's crypto/x509 CreateCertificate from
//     templates that this package builds from the role and the request; no
//     template library is involved, so nothing from a CSR reaches a
//     certificate unless this code copies it. Key usage, extended key usage,
//     basic constraints and SANs always come from the role and the request;
//     a CSR extension is copied only if its OID is in the role's
//     allowed_csr_extensions and it is not one that this package controls.
//   - Every certificate (leaves, intermediates, cross-signs) is linted
//     before the HSM signs it, in one x509.CreateCertificate pass (lint.go):
//     the signer it is given lints the TBSCertificate (with a placeholder
//     signature of the issuer key's size) with zlint using a filtered
//     registry chosen by the role's lint profile (or its own lint_sources)
//     minus its lint_exclude, and only then has the HSM sign that same
//     TBSCertificate; the signature is then checked with the issuer's
//     public key. Any error or fatal finding refuses issuance (ErrLint,
//     InvalidArgument, naming the lints). Lints of the signature value itself
//     (e_cert_issued_by_compromised_emudhra_ca) judge the issuer's key: they
//     run on its first real certificate and their verdict is kept.
//   - Lint profiles: "internal" (the default) lints with RFC 5280, RFC 5480,
//     RFC 5891 and zlint's community lints: structure and encodings, not the
//     public web's rules, so cluster-local names (svc.cluster.local),
//     private TLDs (.internal, .test, .local), private IPs and Ed25519 keys
//     are issued, and no certificate policy is added (issuers carry none
//     unless created with policy_identifiers). "public" adds the CA/B Forum Baseline Requirements for
//     server certificates and the S/MIME BR for email protection; those
//     need certificate policies, so such roles with no policy_identifiers
//     get 2.23.140.1.2.1 (domain validated), and they refuse Ed25519 under
//     every issuer; create their issuers with that policy (or anyPolicy)
//     in policy_identifiers so that the hierarchy agrees. The BR also want plain-HTTP AIA and CRL URLs: with an
//     https BaseURL, put HTTPSURLLints in Config.LintExclude. Issuer
//     certificates are linted with the internal set.
//   - Key usage defaults to digitalSignature, plus keyEncipherment for RSA
//     keys of server certificates; keyEncipherment never for non-RSA keys,
//     keyAgreement never for RSA or Ed25519.
//   - Serial numbers are 16 bytes: a tag byte, the issue time in
//     milliseconds (6 bytes), then 72 random bits; so they are positive,
//     31 hex digits, and sort by issue time, which appends each record to
//     the store instead of writing it at a random place. Each certificate's
//     record is written with a must-not-exist compare-and-swap on
//     pki/certs/<serial> before the certificate is returned; a collision
//     makes a new serial and signs again. Roles with no_store still record
//     serial, issuer and expiry (needed for OCSP and revocation), not the DER.
//   - Validity: the request's ttl (default the role's ttl) must not exceed
//     the role's max_ttl; NotAfter is then capped at the issuer's NotAfter
//     (never past it). NotBefore is backdated by the role's
//     not_before_backdate (default 30 s).
//   - Names: DNS names are lowercased and checked for syntax; a wildcard is
//     only a whole leftmost "*" label. allow_bare_domains, allow_subdomains
//     (any depth), allow_glob_domains ('*' matches within one label, so
//     "*.example.com" does not match "a.b.example.com") and
//     allow_wildcard_certificates are separate switches. A wildcard "*.x" is
//     allowed only if names directly below x are. A DNS-like common name is
//     also put into the DNS SANs.
//   - Rotation: create a new issuer and make it the default; mark the old
//     one retired (UpdateIssuer). A retired issuer signs nothing but keeps
//     serving CRLs and OCSP; DeleteIssuer refuses while any unexpired
//     certificate it issued is recorded.
//   - CRLs: a revocation rebuilds the issuer's full CRL and a delta CRL
//     (delta CRL indicator naming a full CRL's number, RFC 5280 5.2.4: the
//     oldest full CRL still within its validity, since a relying party may
//     hold any of them, and the delta lists every revocation since it);
//     full and delta share one CRL number sequence kept in the store. Run
//     (or Maintain, called by it) rebuilds both before their nextUpdate.
//   - OCSP: responses are signed by the issuer's key, or by a delegated
//     responder key and certificate (id-kp-OCSPSigning, id-pkix-ocsp-nocheck)
//     that CreateRootIssuer/CreateIntermediateIssuer make in the HSM for
//     Ed25519 issuers (golang.org/x/crypto/ocsp signs only with RSA and
//     ECDSA) or for every issuer when Config.DelegatedOCSP is set.
//   - Issued certificates carry AIA (OCSP and CA issuers) and CRL
//     distribution point URLs under Config.BaseURL, served by Handler (mount
//     it at "/pki/", or call RegisterHTTP on the server's mux). An OCSP GET
//     request's base64 is read from the path as sent, URL-encoded (RFC 6960
//     A.1) or not: a ServeMux would clean a raw "//" in it and redirect, so
//     the server also mounts Handler for OCSPGETPrefix ahead of its mux
//     (internal/server HandleHTTPPrefix). RegisterHTTP alone reads only
//     URL-encoded ones whole.
//   - Issue and Sign take one certificate request each (not a batch of
//     items): every certificate has its own key and names, and concurrent
//     calls scale the same way.
//   - Name constraints on an issuer (or above it) are enforced at issuance:
//     a name they exclude is refused even if the role allows it.
//   - A CA certificate (intermediate, cross-signature, imported
//     intermediate) is checked against the CAs above it before it is made
//     (FailedPrecondition, ErrParentConstraint): every pathLenConstraint
//     above must allow one more CA level (self-issued certificates not
//     counted, RFC 5280 6.1.4), a path length asked for must fit, and an
//     unlimited one is lowered to what the chain allows; its permitted name
//     subtrees must lie inside those of every CA above and outside their
//     excluded ones. Intermediates get pathlen:0 unless max_path_len says
//     otherwise.
//
// # Wiring
//
//	svc, err := pki.New(pki.Config{Store: st, Keys: module, BaseURL: "http://ca.example.net"})
//	hsmgatev1.RegisterPKIServiceServer(grpcServer, svc)  // methods return domain errors (errs kinds)
//	mux.Handle("/pki/", svc.Handler())                   // public: CA certs, CRLs, OCSP
//	                                                     // (and OCSPGETPrefix ahead of mux: see above)
//	rules := pki.AuthTable()                             // RPC → capability on pki/... resources
//	go svc.Run(ctx, time.Minute)                         // CRLs rebuilt before nextUpdate
//
// # Store layout
//
//	pki/issuers/<name>        Issuer (protobuf)
//	pki/default-issuer        the default issuer's name
//	pki/roles/<name>          Role
//	pki/certs/<serial>        CertificateRecord
//	pki/revoked/<issuer>/<serial>  CertificateRecord of a revoked certificate
//	pki/crl/<issuer>          CRLState
package pki
