package ring

import "errors"

// ErrSize is returned for a ring size that is not a power of two between 1
// and MaxSize.
var ErrSize = errors.New("ring size must be a power of two between 1 and 2^31")
