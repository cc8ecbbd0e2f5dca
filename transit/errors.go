package transit

import "github.com/hsmgate/hsmgate/internal/errs"

// Sentinel errors (match with errors.Is; the server maps them through errs).
var (
	// ErrKeyNotFound: no key with that name.
	ErrKeyNotFound = errs.New(errs.NotFound, "transit: key not found")
	// ErrKeyExists: CreateKey/ImportKey/RestoreKey on a name that is taken.
	ErrKeyExists = errs.New(errs.AlreadyExists, "transit: key exists")
	// ErrInvalid: a malformed request (bad name, type, size, option).
	ErrInvalid = errs.New(errs.InvalidArgument, "transit: invalid argument")
	// ErrWrongKeyType: the operation does not apply to the key's type.
	ErrWrongKeyType = errs.New(errs.InvalidArgument, "transit: wrong key type for the operation")
	// ErrMalformed: a ciphertext or text form that does not parse.
	ErrMalformed = errs.New(errs.InvalidArgument, "transit: malformed ciphertext")
	// ErrDecrypt: authentication failed (tampered ciphertext, wrong AAD or context).
	ErrDecrypt = errs.New(errs.InvalidArgument, "transit: decryption failed")
	// ErrContextRequired: a derived key was used without a context.
	ErrContextRequired = errs.New(errs.InvalidArgument, "transit: context required for a derived key")
	// ErrUnknownVersion: a version above the latest.
	ErrUnknownVersion = errs.New(errs.InvalidArgument, "transit: unknown key version")
	// ErrVersionNotAllowed: below min_decryption/min_encryption_version, or trimmed.
	ErrVersionNotAllowed = errs.New(errs.FailedPrecondition, "transit: key version not allowed")
	// ErrVersionDisabled: the version is disabled.
	ErrVersionDisabled = errs.New(errs.FailedPrecondition, "transit: key version disabled")
	// ErrNotAllowed: the key's policy forbids the operation (deletion, export, backup).
	ErrNotAllowed = errs.New(errs.FailedPrecondition, "transit: not allowed by the key's policy")
	// ErrTooMany: more items or bytes than allowed.
	ErrTooMany = errs.New(errs.ResourceExhausted, "transit: request too large")
	// ErrUsageExhausted: the version reached max_encryptions_per_version and
	// could not rotate.
	ErrUsageExhausted = errs.New(errs.ResourceExhausted, "transit: key version usage exhausted")
	// ErrUnavailable: the HSM or the store cannot serve now.
	ErrUnavailable = errs.New(errs.Unavailable, "transit: unavailable")
	// ErrConflict: too many concurrent updates of one key; retry.
	ErrConflict = errs.New(errs.Aborted, "transit: concurrent update, retry")
)
