// Command testcluster bundles the Kubernetes control plane used by moorage's
// end-to-end tests into one binary, one subcommand per component:
//
//	testcluster etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kwok|kubelet|kube-proxy [flags...]
//
// kubelet and kube-proxy run the dev cluster's one real node (moorage.devcluster.node).
//
// Linking everything once saves a lot of build time compared with one binary
// per component, since the components share most of their dependencies.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	_ "time/tzdata" // CronJob time zones

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kubeproxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
	kwokconfig "sigs.k8s.io/kwok/pkg/config"
	kwokcmd "sigs.k8s.io/kwok/pkg/kwok/cmd"
	kwoklog "sigs.k8s.io/kwok/pkg/log"
	"sigs.k8s.io/kwok/pkg/utils/signals"
)

const usage = "usage: testcluster etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kwok|kubelet|kube-proxy [flags...]"

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if name == "testcluster" {
		if len(args) == 0 {
			fmt.Fprintln(os.Stderr, usage)
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	os.Exit(run(name, args))
}

func run(name string, args []string) int {
	switch name {
	case "etcd":
		// etcdmain parses os.Args itself.
		os.Args = append([]string{"etcd"}, args...)
		etcdmain.Main(os.Args)
		return 0
	case "kube-apiserver":
		return runCobra(apiserver.NewAPIServerCommand(), args)
	case "kube-controller-manager":
		return runCobra(controllermanager.NewControllerManagerCommand(), args)
	case "kube-scheduler":
		return runCobra(scheduler.NewSchedulerCommand(), args)
	case "kwok":
		return runKwok(args)
	case "kubelet":
		return runCobra(kubelet.NewKubeletCommand(context.Background()), args)
	case "kube-proxy":
		return runCobra(kubeproxy.NewProxyCommand(), args)
	default:
		fmt.Fprintf(os.Stderr, "unknown component %q\n%s\n", name, usage)
		return 2
	}
}

func runCobra(cmd *cobra.Command, args []string) int {
	cmd.SetArgs(args)
	return cli.Run(cmd)
}

// runKwok mirrors sigs.k8s.io/kwok/cmd/kwok's main, which is not importable.
func runKwok(args []string) int {
	flagset := pflag.NewFlagSet("global", pflag.ContinueOnError)
	flagset.ParseErrorsAllowlist.UnknownFlags = true
	flagset.Usage = func() {}

	// The global flags are parsed from os.Args by the kwok helpers.
	os.Args = append([]string{"kwok"}, args...)
	ctx := signals.SetupSignalContext()
	ctx, logger := kwoklog.InitFlags(ctx, flagset)
	ctx, err := kwokconfig.InitFlags(ctx, flagset)
	if err != nil {
		_, _ = os.Stderr.Write([]byte(flagset.FlagUsages()))
		logger.Error("Init config flags", "err", err)
		return 1
	}
	command := kwokcmd.NewCommand(ctx)
	// cobra merges pflag.CommandLine into the root command, and in this binary
	// it already holds component-base's non-bool --version flag, which makes
	// cobra's own bool --version handling fail on every run.
	command.Version = ""
	command.PersistentFlags().AddFlagSet(flagset)
	command.SetArgs(args)
	if err := command.ExecuteContext(ctx); err != nil {
		logger.Error("Execute exit", "err", err)
		return 1
	}
	return 0
}
