// kstatus reads Kubernetes objects as JSON on stdin (a stream of objects, or of Lists of them) and
// prints, per object, one JSON line with what sigs.k8s.io/cli-utils/pkg/kstatus/status computes for
// it: {"namespace","name","status","message"}. Status is Current, InProgress, Failed, Terminating,
// NotFound or Unknown, as Flux, kpt and cli-utils waiters see the object.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(in)
	enc := json.NewEncoder(out)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading a JSON object from stdin: %w", err)
		}
		// The API machinery's decoder: integers as int64, as unstructured accessors expect.
		var obj map[string]interface{}
		if err := utiljson.Unmarshal(raw, &obj); err != nil {
			return fmt.Errorf("reading a JSON object from stdin: %w", err)
		}
		u := &unstructured.Unstructured{Object: obj}
		objects := []unstructured.Unstructured{*u}
		if u.IsList() {
			list, err := u.ToList()
			if err != nil {
				return fmt.Errorf("reading %s: %w", u.GetKind(), err)
			}
			objects = list.Items
		}
		for i := range objects {
			o := &objects[i]
			res, err := status.Compute(o)
			if err != nil {
				return fmt.Errorf("computing the status of %s %s/%s: %w", o.GetKind(), o.GetNamespace(), o.GetName(), err)
			}
			if err := enc.Encode(result{Namespace: o.GetNamespace(), Name: o.GetName(), Status: res.Status.String(), Message: res.Message}); err != nil {
				return err
			}
		}
	}
}
